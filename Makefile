# Two commands, as in the README's Quickstart. Each installs what it needs first.
.PHONY: serve test install

serve:  ## install everything and start Puente with the local default model on 127.0.0.1:8000
	scripts/serve.sh

test:   ## install everything and run the linters and the whole test suite
	scripts/test.sh

install:
	scripts/install.sh
