"""`function` agents: a Python callable deployed to this worker, named by its import path.

Async callables run on the worker's event loop; plain functions run on the worker's bounded
agent thread pool (activities/threads.py) so they never block it. A pydantic-annotated first parameter is validated from the step input, and a second
parameter receives the `AgentContext`.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python
from temporalio.exceptions import ApplicationError

from ensemble.activities.errors import permanent
from ensemble.activities.executors import executor
from ensemble.activities.threads import THREADS
from ensemble.authoring.agents import NotDeployed, check_agent, load_handler
from ensemble.spec import AgentCall, AgentResult


@functools.lru_cache(maxsize=512)
def _handler(path: str) -> tuple[Callable[..., Any], type[BaseModel] | None, type[BaseModel] | None, bool]:
    fn = load_handler(path)
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())

    def model(annotation: Any) -> type[BaseModel] | None:
        return annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None

    in_model = model(hints.get(params[0].name)) if params else None
    return fn, in_model, model(hints.get("return")), len(params) >= 2


@executor("function")
async def run_function(call: AgentCall) -> AgentResult:
    who = f"agent '{call.agent.name}'"
    try:
        check_agent(call.agent)  # only deployed code runs: nothing named by the run is imported
    except NotDeployed as err:
        raise permanent(f"{who}: {err}", kind="AgentNotDeployed") from None
    try:
        fn, in_model, out_model, wants_context = _handler(call.agent.handler or "")
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        raise permanent(
            f"{who}: cannot load handler {call.agent.handler!r} on this worker: {err}", kind="AgentNotFound"
        ) from None
    args: list[Any] = [call.input]
    if in_model is not None:
        try:
            args[0] = in_model.model_validate(call.input)
        except ValidationError as err:
            raise permanent(
                f"{who}: input does not match {in_model.__name__}: {_brief(err)}", kind="InvalidInput"
            ) from None
    if wants_context:
        args.append(call.context)
    try:
        if inspect.iscoroutinefunction(fn):
            out = await fn(*args)
        else:
            out = await THREADS.run(fn, *args, who=call.agent.name)  # bounded, and a hung one is accounted for
    except ApplicationError:
        raise
    except ValidationError as err:
        raise permanent(f"{who}: {_brief(err)}", kind="InvalidInput") from None
    except PermissionError as err:  # retrying cannot grant a permission
        raise permanent(
            f"{who} was refused permission: {err}; check the worker's credentials and access", kind="PermissionDenied"
        ) from None
    except Exception as err:  # the agent's own failure: retried per its policy, typed by class name
        raise ApplicationError(f"{who} raised {type(err).__name__}: {err}", type=type(err).__name__) from err
    if out_model is not None and not isinstance(out, out_model):
        try:
            out = out_model.model_validate(out)
        except ValidationError as err:
            raise permanent(
                f"{who}: output does not match {out_model.__name__}: {_brief(err)}", kind="InvalidOutput"
            ) from None
    try:
        return AgentResult(output=to_jsonable_python(out))
    except (
        PydanticSerializationError,
        TypeError,
        ValueError,
        RecursionError,
    ) as err:  # the same output fails the same way again
        raise permanent(
            f"{who} returned a value that cannot be sent as JSON: {str(err)[:300]}", kind="UnserializableOutput"
        ) from None


def _brief(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
