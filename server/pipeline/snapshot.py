"""One configuration as the pipeline serves it: the catalog, the personas and their generation.

A reload builds a new snapshot and swaps it in with one assignment, so a request sees one whole
configuration, old or new, from its admission to its last fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.config import Config
from server.personas.persona import Personas
from server.pipeline.catalog import Catalog


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    catalog: Catalog
    personas: Personas
    generation: int = 0
