"""Python functions as toolgraph tools: the ``@tool`` decorator, schemas from type hints and
docstrings, and the seed's skill objects (``.execute(**kwargs)`` returning a ``SkillResult``)."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import typing
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["Tool", "tool", "SkillError"]

ResourcesFn = Callable[[Dict[str, Any]], Iterable[Tuple[str, str]]]


class SkillError(Exception):
    """A seed-style skill answered ``SkillResult(success=False, error=...)``."""


@dataclasses.dataclass
class Tool:
    """A function with what the scheduler needs to know about it.

    ``parameters`` is the JSON schema of its arguments (derived from type hints and the
    docstring unless given). ``idempotent`` allows retries and early starts;
    ``max_concurrency`` caps its calls at once (across every execution of the executor);
    ``blocking`` runs it on a worker thread (always so for a plain ``def``); ``resources``
    maps a call's arguments to the ``("read"|"write", key)`` pairs it touches, so that two
    calls touching one key, one writing, run in the order they were emitted.
    """

    func: Callable[..., Any]
    name: str
    description: str = ""
    parameters: Optional[Dict[str, Any]] = None
    idempotent: bool = False
    max_concurrency: Optional[int] = None
    blocking: Optional[bool] = None
    timeout_ms: Optional[int] = None
    exclusive: bool = False
    cpu: float = 0.0
    memory_mb: int = 0
    resources: Optional[ResourcesFn] = None

    def __post_init__(self) -> None:
        if inspect.isasyncgenfunction(self.func):
            raise TypeError(
                f"tool {self.name}: an async generator function cannot be a tool "
                "(return the items instead)"
            )
        if self.parameters is None:
            self.parameters = schema_of(self.func)
        if not self.description:
            self.description = summary_of(self.func)

    @property
    def is_async(self) -> bool:
        """Awaited on the caller's event loop (an ``async def`` that is not marked blocking)."""
        return _is_coroutine_function(self.func) and not self.blocking

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def definition(self) -> Dict[str, Any]:
        """What the native engine registers."""
        func = self.func
        if _is_coroutine_function(func) and self.blocking:
            # A coroutine function asked to block: run it to completion on its worker thread.
            import asyncio

            coroutine_function = func

            def func(**kwargs: Any) -> Any:
                return asyncio.run(coroutine_function(**kwargs))

        resources = self.resources

        def resources_of(args: Dict[str, Any]) -> List[Tuple[str, str]]:
            assert resources is not None
            return [(str(access), str(key)) for access, key in resources(args)]

        call_sync = _sync_caller(func)
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "is_async": self.is_async,
            "idempotent": self.idempotent,
            "exclusive": self.exclusive,
            "max_concurrency": self.max_concurrency,
            "timeout_ms": self.timeout_ms,
            "cpu": self.cpu,
            "memory_mb": self.memory_mb,
            "func": func if self.is_async else call_sync,
            "resources": resources_of if resources is not None else None,
        }


def _sync_caller(func: Callable[..., Any]) -> Callable[[Dict[str, Any]], Any]:
    def call(args: Dict[str, Any]) -> Any:
        result = func(**args)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if callable(close):
                close()
            raise TypeError(
                f"{_name_of(func)} is a plain function that returned an awaitable; "
                "declare it `async def` (or wrap it in one) so it runs on the event loop"
            )
        return result

    return call


def _is_coroutine_function(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)
    )


@typing.overload
def tool(
    func: Callable[..., Any],
    /,
    *,
    name: Optional[str] = None,
    description: Optional[str] = None,
    parameters: Optional[Dict[str, Any]] = None,
    idempotent: bool = False,
    max_concurrency: Optional[int] = None,
    blocking: Optional[bool] = None,
    timeout_ms: Optional[int] = None,
    exclusive: bool = False,
    cpu: float = 0.0,
    memory_mb: int = 0,
    resources: Optional[ResourcesFn] = None,
) -> Tool: ...
@typing.overload
def tool(
    func: None = None,
    /,
    *,
    name: Optional[str] = None,
    description: Optional[str] = None,
    parameters: Optional[Dict[str, Any]] = None,
    idempotent: bool = False,
    max_concurrency: Optional[int] = None,
    blocking: Optional[bool] = None,
    timeout_ms: Optional[int] = None,
    exclusive: bool = False,
    cpu: float = 0.0,
    memory_mb: int = 0,
    resources: Optional[ResourcesFn] = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Optional[Callable[..., Any]] = None,
    /,
    *,
    name: Optional[str] = None,
    description: Optional[str] = None,
    parameters: Optional[Dict[str, Any]] = None,
    idempotent: bool = False,
    max_concurrency: Optional[int] = None,
    blocking: Optional[bool] = None,
    timeout_ms: Optional[int] = None,
    exclusive: bool = False,
    cpu: float = 0.0,
    memory_mb: int = 0,
    resources: Optional[ResourcesFn] = None,
) -> Union[Tool, Callable[[Callable[..., Any]], Tool]]:
    """Declares a function a tool: ``@tool``, ``@tool(idempotent=True, ...)`` or
    ``tool(fn, name=..., parameters=...)``. An ``async def`` is awaited on the caller's event
    loop; a plain ``def`` runs on a worker thread."""

    def wrap(f: Callable[..., Any]) -> Tool:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"tool {name or _name_of(f)}: max_concurrency must be at least 1")
        return Tool(
            func=f,
            name=name or _name_of(f),
            description=description or "",
            parameters=parameters,
            idempotent=idempotent,
            max_concurrency=max_concurrency,
            blocking=blocking,
            timeout_ms=timeout_ms,
            exclusive=exclusive,
            cpu=cpu,
            memory_mb=memory_mb,
            resources=resources,
        )

    if func is not None:
        return wrap(func)
    return wrap


def _name_of(func: Any) -> str:
    return str(getattr(func, "__name__", None) or type(func).__name__)


def as_tool(name: str, skill: Any) -> Tool:
    """Whatever ``skills`` holds — a ``Tool``, a function, a seed ``BaseSkill`` — as a Tool
    registered under ``name``."""
    if isinstance(skill, Tool):
        if skill.name != name:
            return dataclasses.replace(skill, name=name)
        return skill
    execute = getattr(skill, "execute", None)
    if callable(execute) and not inspect.isfunction(skill) and not inspect.ismethod(skill):
        return Tool(
            func=_skill_caller(execute),
            name=name,
            description=str(getattr(skill, "description", "") or summary_of(type(skill))),
            parameters=_skill_parameters(skill, execute),
            idempotent=bool(getattr(skill, "idempotent", False)),
            max_concurrency=getattr(skill, "max_concurrency", None),
        )
    if callable(skill):
        return Tool(func=skill, name=name)
    raise TypeError(
        f"skill {name!r}: expected a function, a toolgraph.Tool or an object with "
        f".execute(**kwargs), got {type(skill).__name__}"
    )


def _skill_parameters(skill: Any, execute: Callable[..., Any]) -> Dict[str, Any]:
    declared = getattr(skill, "parameters", None) or getattr(skill, "parameters_schema", None)
    if isinstance(declared, dict):
        return declared
    return schema_of(execute)


def _skill_caller(execute: Callable[..., Any]) -> Callable[..., Any]:
    """A skill's ``execute`` whose ``SkillResult`` becomes data, or an error when it failed."""
    if _is_coroutine_function(execute):

        async def call_async(**kwargs: Any) -> Any:
            return unwrap_skill_result(await execute(**kwargs))

        call_async.__name__ = _name_of(execute)
        return call_async

    def call(**kwargs: Any) -> Any:
        return unwrap_skill_result(execute(**kwargs))

    call.__name__ = _name_of(execute)
    return call


def unwrap_skill_result(result: Any) -> Any:
    """``SkillResult(success, data, error)`` → its data, or raises ``SkillError``."""
    if isinstance(result, (dict, list, str, int, float, bool)) or result is None:
        return result
    if hasattr(result, "success") and hasattr(result, "data"):
        if not result.success:
            raise SkillError(str(getattr(result, "error", None) or "the skill failed"))
        return result.data
    return result


# --- schemas from signatures -------------------------------------------------------------

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def summary_of(func: Any) -> str:
    """The docstring's first paragraph."""
    doc = inspect.getdoc(func) or ""
    return doc.split("\n\n", 1)[0].strip()


def _arg_docs(func: Any) -> Dict[str, str]:
    """Per-parameter text from a Google-style ``Args:`` section or reST ``:param x:`` lines."""
    doc = inspect.getdoc(func) or ""
    found: Dict[str, str] = {}
    for m in re.finditer(r":param\s+(?:\w+\s+)?(\w+):\s*(.+)", doc):
        found[m.group(1)] = m.group(2).strip()
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?|\s*\n)*)", doc, re.M)
    if section:
        current: Optional[str] = None
        for line in section.group(1).splitlines():
            arg = _ARG_LINE.match(line)
            if arg and (len(line) - len(line.lstrip())) <= 4:
                current = arg.group(1).lstrip("*")
                found[current] = arg.group(3).strip()
            elif current and line.strip():
                found[current] = (found[current] + " " + line.strip()).strip()
    return found


def schema_of(func: Any) -> Dict[str, Any]:
    """The JSON schema of a function's keyword arguments."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return {"type": "object"}
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = _hints_one_by_one(func, signature)
    docs = _arg_docs(func)
    properties: Dict[str, Any] = {}
    required: List[str] = []
    open_ended = False
    for pname, param in signature.parameters.items():
        if pname in ("self", "cls"):
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        schema = type_schema(hints.get(pname, param.annotation))
        if pname in docs:
            schema = {**schema, "description": docs[pname]}
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        elif _json_default(param.default):
            schema = {**schema, "default": param.default}
        properties[pname] = schema
    out: Dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if not open_ended:
        out["additionalProperties"] = False
    return out


def _hints_one_by_one(func: Any, signature: inspect.Signature) -> Dict[str, Any]:
    """Annotations resolved one at a time (``get_type_hints`` gives up on the first it cannot
    resolve, e.g. a name imported inside a function under ``from __future__ import
    annotations``); those that stay unresolved mean "anything"."""
    namespace = dict(getattr(func, "__globals__", {}))
    namespace.setdefault("typing", typing)
    for name in ("Any", "Dict", "List", "Optional", "Union", "Literal", "Tuple", "Sequence"):
        namespace.setdefault(name, getattr(typing, name))
    hints: Dict[str, Any] = {}
    for pname, param in signature.parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the function's own annotation
            except Exception:
                continue
        hints[pname] = annotation
    return hints


def _json_default(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def type_schema(annotation: Any) -> Dict[str, Any]:
    """The JSON schema of one annotation (``{}`` — anything — when it cannot tell)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation is type(None):
        return {"type": "null"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in simple:
        return {"type": simple[annotation]}
    if annotation in (dict, Dict):
        return {"type": "object"}
    if annotation in (list, List, tuple, Sequence):
        return {"type": "array"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"enum": [m.value for m in annotation]}
    model_schema = getattr(annotation, "model_json_schema", None)
    if callable(model_schema):
        try:
            return dict(model_schema())
        except Exception:
            return {"type": "object"}
    if typing.is_typeddict(annotation) if hasattr(typing, "is_typeddict") else False:
        hints = typing.get_type_hints(annotation)
        return {
            "type": "object",
            "properties": {k: type_schema(v) for k, v in hints.items()},
            "required": sorted(getattr(annotation, "__required_keys__", hints.keys())),
        }
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            inner = type_schema(options[0])
            return inner if len(options) == len(args) else _nullable(inner)
        return {"anyOf": [type_schema(a) for a in args]}
    if origin in (list, List, Sequence, typing.Sequence, set, frozenset):
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0])}
        return {"type": "array", "prefixItems": [type_schema(a) for a in args]}
    if origin in (dict, Dict, typing.Mapping):
        if len(args) == 2:
            return {"type": "object", "additionalProperties": type_schema(args[1])}
        return {"type": "object"}
    if origin is typing.Annotated:
        return type_schema(args[0])
    return {}


def _nullable(schema: Dict[str, Any]) -> Dict[str, Any]:
    if "type" in schema and isinstance(schema["type"], str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}
