"""Whether a class really implements the Recommender protocol (registry and stage-row
tests)."""

import ast
import inspect
import textwrap
import typing

from llm4rec.models import (
    Recommender,
)

PROTOCOL = [n for n, v in vars(Recommender).items() if inspect.isfunction(v) and n[0] != "_"]


def _raises_not_implemented(body: list[ast.stmt]) -> bool:
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _body(function) -> list[ast.stmt]:
    """The statements of a function, its docstring left out."""
    (node,) = ast.parse(textwrap.dedent(inspect.getsource(function))).body
    body = node.body
    docstring = body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    return body[1:] if docstring and isinstance(body[0].value.value, str) else body


def _is_stub(body: list[ast.stmt]) -> bool:
    """Nothing but `...`, `pass` or `raise NotImplementedError` (or only a docstring)."""
    ellipsis = (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and body[0].value.value is Ellipsis
    )
    only_pass = len(body) == 1 and isinstance(body[0], ast.Pass)
    return not body or ellipsis or only_pass or _raises_not_implemented(body)


def _owner(cls: type, name: str) -> type | None:
    """The class whose own definition of `name` an instance of `cls` uses."""
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def protocol_gaps(cls: type) -> list[str]:
    """Why `cls` does not really implement the Recommender protocol ([] when it does).

    Each protocol method must be resolved (through the MRO) to a real function of `cls` or an
    ancestor (not `object`, not the Protocol's own `...` stub), whose body is more than a stub
    (`...`, `pass`, `raise NotImplementedError`), and whose signature takes the protocol's
    parameters with the same names, kinds and types, in order (extra ones need a default), and
    returns the protocol's type. And no method an instance would call may be a hook its base
    left to subclasses (`raise NotImplementedError`, e.g. LLMRecommender.decode).
    """
    gaps = []
    for name in PROTOCOL:
        owner = _owner(cls, name)
        if owner is None or owner is object:
            gaps.append(f"{name}: not implemented")
            continue
        if getattr(owner, "_is_protocol", False):
            gaps.append(f"{name}: only the Protocol's stub")
            continue
        where, impl = f"{owner.__name__}.{name}", vars(owner)[name]
        if not inspect.isfunction(impl):
            gaps.append(f"{where}: not a method")
            continue
        if _is_stub(_body(impl)):
            gaps.append(f"{where}: a stub")
        spec = getattr(Recommender, name)
        want = list(inspect.signature(spec).parameters.values())
        have = list(inspect.signature(impl).parameters.values())
        if [(p.name, p.kind) for p in have[: len(want)]] != [(p.name, p.kind) for p in want]:
            gaps.append(f"{where}{inspect.signature(impl)}: expected {inspect.signature(spec)}")
        elif any(p.default is p.empty for p in have[len(want) :]):
            gaps.append(f"{where}: extra parameters without a default")
        have_types = typing.get_type_hints(impl)
        for key, expected in typing.get_type_hints(spec).items():
            if key != "return" and key not in inspect.signature(impl).parameters:
                continue  # reported with the signature
            if have_types.get(key, "not annotated") != expected:
                gaps.append(
                    f"{where}: {key} is {have_types.get(key, 'not annotated')}, expected {expected}"
                )
    for name in sorted({n for k in cls.__mro__[:-1] for n in vars(k)} - set(PROTOCOL)):
        owner = _owner(cls, name)
        impl = vars(owner)[name]
        if inspect.isfunction(impl) and _raises_not_implemented(_body(impl)):
            gaps.append(f"{owner.__name__}.{name}: left to subclasses, not implemented")
    return gaps
