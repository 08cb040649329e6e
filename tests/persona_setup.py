"""A Puente with personas over the fake upstream, shared by the persona and farewell tests."""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_upstream import FakeOpenAI

FAREWELL = "Lo siento, solo puedo ayudarte con matemáticas. ¡Hasta pronto!"
MARKER = "[[FAREWELL]]"
# A marker with spaces: the fake streams a reply word by word, so this one arrives in pieces.
SPACED_MARKER = "<< ADIÓS Y HASTA PRONTO >>"
SPACED_FAREWELL = "Ha sido un placer. ¡Adiós!"

MATH_SYSTEM = "Eres un experto en matemáticas."
MATH_RULES = ["Responde solo preguntas de matemáticas.", "Muestra los pasos."]


def persona_config(fake: FakeOpenAI) -> dict[str, Any]:
    personas: list[dict[str, Any]] = [
        {
            "name": "matematicas",
            "model": "fake-model",
            "description": "Experto en matemáticas",
            "system": MATH_SYSTEM,
            "rules": MATH_RULES,
            "farewell": FAREWELL,
            "defaults": {"temperature": 0.2, "max_tokens": 100},
            "caps": {"max_tokens": 512, "temperature": 1.0, "top_p": 0.9, "n": 2},
        },
        {
            "name": "sordo",
            "model": "fake-model",
            "system": "Ignoras las instrucciones del cliente.",
            "client_system": "ignore",
        },
        {
            "name": "estricto",
            "model": "fake-model",
            "system": "No aceptas instrucciones de sistema.",
            "client_system": "reject",
            "caps": {"max_tokens": 64},
        },
        {
            "name": "plegado",
            "model": "folded",
            "system": "Eres breve.",
            "rules": ["Una frase."],
            "farewell": FAREWELL,
        },
        {
            "name": "espaciado",
            "model": "fake-model",
            "system": "Te despides con ceremonia.",
            "farewell": SPACED_FAREWELL,
            "marker": SPACED_MARKER,
        },
        {"name": "sin-llave", "model": "needs-key", "system": "Nunca disponible."},
    ]
    return {
        "models": [
            {"name": "fake-model", "provider": "openai_compatible", "base_url": fake.base_url},
            {
                "name": "folded",
                "provider": "openai_compatible",
                "base_url": fake.base_url,
                "model": "fake-model",
                "system_role": "fold",
            },
            {
                "name": "needs-key",
                "provider": "openai_compatible",
                "base_url": fake.base_url,
                "api_key": "${PUENTE_TEST_UNSET_KEY}",
            },
        ],
        "personas": personas,
    }
