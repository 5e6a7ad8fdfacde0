"""Resource quantities as Bacalhau v0.3.23 read them, except that garbage is an error.

CPU is a Kubernetes quantity ("100m" = 0.1, "2", "1.5"). Memory and disk are
read by c2h5oh/datasize after lower-casing, dropping spaces and turning "i"
into "b", so every unit is binary: "100mb" = "100Mi" = 100 * 2**20. No kept
library has both semantics (docs/libraries.md), so these are small and tested.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(r"^\s*([+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")

_CPU_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}

# datasize units after sanitising: b, k/kb, m/mb, ... all powers of 1024.
_BYTE_SUFFIX: dict[str, int] = {"": 1, "b": 1} | {
    unit + tail: 2 ** (10 * power)
    for power, unit in enumerate("kmgtpe", start=1)
    for tail in ("", "b", "bb")  # "bb": "KiB" sanitised is "kbb"
}

MAX_BYTES = 2**63 - 1
MAX_CPU = 1_000_000.0  # cores: far beyond any host, small enough to stay exact as a float
MAX_TEXT = 64  # characters of a quantity: "1.5Gi" needs 5; longer is an attack or a mistake
_MAX_EXPONENT = 30  # 10**30 is beyond MAX_BYTES and MAX_CPU in any unit: refuse before multiplying


def _split(text: str, what: str) -> tuple[Decimal, str]:
    if len(text) > MAX_TEXT:
        raise ValueError(f"a {what} of {len(text)} characters is longer than the {MAX_TEXT} allowed")
    m = _NUMBER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a {what}")
    try:
        value = Decimal(m[1])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a {what}") from None
    # Decimal keeps "1e999999" exact: turning it into an int or multiplying it would take seconds.
    if value and value.adjusted() > _MAX_EXPONENT:
        raise ValueError(f"{text!r} is too large")
    return value, m[2]


def parse_cpu(text: str | float | int) -> float:
    """CPU cores from a Kubernetes quantity: "500m" -> 0.5."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a CPU quantity")
    if isinstance(text, int | float):
        text = repr(text)
    value, suffix = _split(text, "CPU quantity")
    if suffix not in _CPU_SUFFIX:
        raise ValueError(f"{text!r} is not a CPU quantity")
    cores = float(value * _CPU_SUFFIX[suffix])
    if cores > MAX_CPU:
        raise ValueError(f"{text!r} is too large (more than {MAX_CPU:g} cores)")
    return cores


def parse_bytes(text: str | int) -> int:
    """Bytes from a size: "100Mi", "100mb", "1GB", "512" (every unit binary)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text!r} is not a size")
        return text
    cleaned = text.replace(" ", "").lower().replace("i", "b")
    value, suffix = _split(cleaned, "size")
    if suffix not in _BYTE_SUFFIX:
        raise ValueError(f"{text!r} is not a size")
    total = int(value * _BYTE_SUFFIX[suffix])
    if total > MAX_BYTES:
        raise ValueError(f"{text!r} is too large")
    return total


def parse_gpu(text: str | int) -> int:
    """A whole number of GPUs."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a whole number of GPUs")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text!r} is not a whole number of GPUs")
        return text
    s = text.strip()
    if not s.isdigit():
        raise ValueError(f"{text!r} is not a whole number of GPUs")
    return int(s)


def format_bytes(n: int) -> str:
    """A short binary size for humans: 104857600 -> "100Mi"."""
    for unit, size in (
        ("Ei", 2**60),
        ("Pi", 2**50),
        ("Ti", 2**40),
        ("Gi", 2**30),
        ("Mi", 2**20),
        ("Ki", 2**10),
    ):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def format_cpu(cores: float) -> str:
    """CPU for humans and for the wire: 0.5 -> "500m", 2.0 -> "2"."""
    if cores == int(cores):
        return str(int(cores))
    return f"{round(cores * 1000)}m"
