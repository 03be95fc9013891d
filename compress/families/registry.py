"""One registry of model families, like timm's model registry."""

from __future__ import annotations

from compress.errors import CompressError
from compress.families.base import Family

_FAMILIES: dict[str, type[Family]] = {}


def register_family(cls: type[Family]) -> type[Family]:
    _FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> Family:
    _load_builtin()
    if name not in _FAMILIES:
        raise CompressError(f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]()


def list_families() -> list[str]:
    _load_builtin()
    return sorted(_FAMILIES)


def _load_builtin() -> None:
    # Imported lazily so that `import compress` stays light and families can import stages' helpers.
    import compress.families.cse.family  # noqa: F401
    import compress.families.embedding  # noqa: F401
    import compress.families.facevid2vid.family  # noqa: F401
    import compress.families.fomm  # noqa: F401
    import compress.families.generic  # noqa: F401
