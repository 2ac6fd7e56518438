"""Cheaper construction for the frozen, slotted dataclasses a compile and a routing decision create.

A frozen dataclass's __init__ stores every field through object.__setattr__, about five times the
cost of a plain one; compiling a big script creates over a hundred thousand of them, and every routing
decision several. `fast_init` gives such a class an __init__ that stores through the slot descriptors
instead: the same fields, defaults and signature (keywords work, so does dataclasses.replace), the same
frozen instances afterwards, at about half the cost.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T", bound=type)

_MISSING = object()


def fast_init(cls: T) -> T:
    params = dataclasses.fields(cls)  # type: ignore[arg-type]
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init needs a slotted dataclass without __post_init__: {cls.__name__}")
    ns: dict[str, object] = {"_MISSING": _MISSING}
    args: list[str] = []
    body: list[str] = []
    for f in params:
        if not f.init or f.kw_only:
            raise TypeError(f"fast_init does not handle init=False or kw_only fields: {cls.__name__}.{f.name}")
        ns[f"_s_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            ns[f"_d_{f.name}"] = f.default
            args.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"_f_{f.name}"] = f.default_factory
            args.append(f"{f.name}=_MISSING")
            body.append(f"if {f.name} is _MISSING: {f.name} = _f_{f.name}()")
        else:
            args.append(f.name)
        body.append(f"_s_{f.name}(self, {f.name})")
    src = f"def __init__(self, {', '.join(args)}):\n    " + "\n    ".join(body or ["pass"]) + "\n"
    exec(compile(src, f"<fast_init {cls.__name__}>", "exec"), ns)  # noqa: S102 - generated from the fields
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls
