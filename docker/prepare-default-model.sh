#!/bin/sh
# Write the embedded default model (SmolLM2-135M-Instruct, from the GGUF inside the image) as a
# Hugging Face folder that vLLM can serve. Idempotent: convert.py renames a complete folder into
# place, with its marker file, so an existing marker means a finished conversion.
#
#   puente-prepare-default-model /models/smollm2-135m-instruct
set -eu
dest="${1:?usage: puente-prepare-default-model DEST_DIR}"
if [ -f "$dest/puente-convert.json" ]; then
    echo "prepare: $dest is ready"
    exit 0
fi
export TQDM_DISABLE=1  # transformers' GGUF loader draws progress bars with tqdm directly
echo "prepare: converting $PUENTE_DEFAULT_GGUF into $dest (about a minute)"
exec python /opt/puente/convert.py "$PUENTE_DEFAULT_GGUF" "$dest"
