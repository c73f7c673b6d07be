"""Each named function's own thread CPU time in a process: what `profile_sections.py` puts
into a bounded flow run.

A section is a function or method named ``module:Qualified.name``. Its time is the
thread CPU (``time.thread_time``) of its calls less that of the named sections it calls,
so the sections of one thread add up without counting a nested one twice. Measured per
call, not sampled: py-spy's samples overstate what waits on chDB (a sampled thread that
waits inside a query counts as busy in it; docs/performance.md). The sections are
wrapped when their module is first imported (a finder ahead of the others on
``sys.meta_path``), so the flow's code is not changed. A named section its module does
not have is reported as missing, not an error: the same list serves older commits.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass
class SectionTimer:
    """Own CPU seconds and calls per section, over every thread of the process."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    _nested: threading.local = field(default_factory=threading.local)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function`, adding its calls' own thread CPU to section `name`."""
        nested, clock = self._nested, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack: list[float] | None = getattr(nested, "stack", None)
            if stack is None:
                stack = nested.stack = [0.0]
            stack.append(0.0)  # CPU of the sections this call makes
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                took = clock() - started
                inner = stack.pop()
                self.seconds[name] = self.seconds.get(name, 0.0) + took - inner
                self.calls[name] = self.calls.get(name, 0) + 1
                stack[-1] += took

        timed.__wrapped__ = function  # type: ignore[attr-defined]
        timed.__name__ = getattr(function, "__name__", "timed")
        return timed

    def patch(self, module: ModuleType, qualnames: Sequence[str]) -> None:
        """Wrap the named functions of `module` (``Class.method`` or ``function``)."""
        for qualname in qualnames:
            *path, attribute = qualname.split(".")
            owner: Any = module
            for part in path:
                owner = getattr(owner, part, None)
            found = vars(owner).get(attribute) if owner is not None else None
            name = f"{module.__name__}:{qualname}"
            if found is None:
                self.missing.append(name)
            elif isinstance(found, staticmethod):
                setattr(owner, attribute, staticmethod(self.wrap(name, found.__func__)))
            else:
                setattr(owner, attribute, self.wrap(name, found))

    def install(self, sections: Sequence[str]) -> None:
        """Wrap `sections` (``module:Qualified.name``) as their modules are imported
        (those imported already, now)."""
        wanted: dict[str, list[str]] = {}
        for section in sections:
            module, _, qualname = section.partition(":")
            wanted.setdefault(module, []).append(qualname)
        for module_name in [m for m in wanted if m in sys.modules]:
            self.patch(sys.modules[module_name], wanted.pop(module_name))
        if wanted:
            sys.meta_path.insert(0, _PatchingFinder(self, wanted))

    def report(self, total_cpu: float) -> str:
        """The sections by own CPU, largest first, against the process's CPU."""
        lines = [f"process CPU {total_cpu:.2f} s (every thread)"]
        for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            lines.append(f"{seconds:9.3f} s {self.calls[name]:9d} calls  {name}")
        lines += [f"  (not in its module: {name})" for name in self.missing]
        return "\n".join(lines)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """Finds a wanted module with the other finders and wraps its sections once it has
    run."""

    def __init__(self, timer: SectionTimer, wanted: dict[str, list[str]]) -> None:
        self.timer, self.wanted = timer, wanted

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        qualnames = self.wanted.pop(fullname, None)
        if qualnames is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, self.timer, qualnames)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: Any, timer: SectionTimer, qualnames: list[str]) -> None:
        self.inner, self.timer, self.qualnames = inner, timer, qualnames

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self.inner.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        self.timer.patch(module, self.qualnames)
