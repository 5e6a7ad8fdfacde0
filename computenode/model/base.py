"""The base of every wire type: Go-style case-insensitive keys, seed names on output."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

# Bacalhau's serialisation guards (pkg/model/utils.go).
MAX_SERIALIZED_BYTES = 10 * 1024 * 1024
MAX_LIST_ELEMENTS = 1000
MAX_DEPTH = 32  # nesting of a job document: a real job is under 8 deep


class WireEnum(enum.StrEnum):
    """An enum that parses like Go's `strings.EqualFold(strings.TrimSpace(s), name)`."""

    @classmethod
    def _missing_(cls, value: object) -> WireEnum | None:
        if isinstance(value, str):
            wanted = value.strip().lower()
            for member in cls:
                if member.value.lower() == wanted:
                    return member
        return None

    def __str__(self) -> str:
        return self.value


class Wire(BaseModel):
    """Wire model base.

    Go's encoding/json matches object keys case-insensitively and ignores keys it
    does not know, so `"Inputs"` and `"inputs"` both fill Spec.inputs. We do the same:
    before validation, every key is mapped to the field whose alias (or name) it
    equals ignoring case. Output uses the aliases, which are the seeds' names.
    """

    model_config = ConfigDict(
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
    )

    @classmethod
    def _keys(cls) -> dict[str, str]:
        km = cls.__dict__.get("_ci_keys")
        if km is None:
            km = {}
            for name, field in cls.model_fields.items():
                alias = field.alias or name
                for k in (name, alias, *getattr(field.validation_alias, "choices", ())):
                    if isinstance(k, str):
                        km.setdefault(k.lower(), alias)
            cls._ci_keys = km  # type: ignore[attr-defined]
        return km

    @model_validator(mode="before")
    @classmethod
    def _fold_keys(cls, data: Any) -> Any:
        return cls.fold_keys(data)

    @classmethod
    def fold_keys(cls, data: Any) -> Any:
        """Rename each key to the field alias it matches ignoring case."""
        if not isinstance(data, dict):
            return data
        keys = cls._keys()
        out: dict[str, Any] = {}
        for k, v in data.items():
            target = keys.get(k.lower(), k) if isinstance(k, str) else k
            # An exact-case key wins over a folded one, as in Go.
            if target in out and k != target:
                continue
            out[target] = v
        return out

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with the seeds' field names."""
        return self.model_dump(mode="json", by_alias=True)
