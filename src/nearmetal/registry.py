"""One way to register a component: a ``Registry`` per kind of component, filled by a decorator in the
module that defines the component.

Layers, workloads, doctor checks, figures, study tables, cleanup finders, backends and the Kubernetes
backend's layer mappings each have one registry. A registry knows the packages its components live in and
imports every module of them the first time it is read, so adding a component is one new module (plus its
test): nothing else lists it. Modules of those packages must therefore import only the standard library,
pydantic and nearmetal at top level (a heavy or optional library is imported where it is used).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from nearmetal.errors import NearmetalError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """name → component, in the order of ``order`` then registration (or name, with ``by_name``: where
    registration order depends on which module imported which). Reading it (``[name]``, iteration,
    ``in``, ``len``) first imports every module of ``packages`` (and ``modules``), so every component has
    registered itself. A second registration of a name is a programming error, unless ``replace=True``."""

    def __init__(
        self,
        what: str,
        packages: tuple[str, ...] = (),
        modules: tuple[str, ...] = (),
        by_name: bool = False,
    ) -> None:
        self.what = what
        self.by_name = by_name
        self.packages = packages
        self.modules = modules
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._order: dict[str, tuple[int, int]] = {}
        self._loaded = False
        self._loading = False

    # registering -------------------------------------------------------------------------------------
    def add(self, name: str, item: T, *, order: int = 50, replace: bool = False, **info: Any) -> T:
        if name in self._items and not replace and self._items[name] is not item:
            raise RuntimeError(f"{self.what} {name!r} is registered twice ({self._items[name]!r}, {item!r})")
        self._items[name] = item
        self._info[name] = info
        self._order[name] = (order, 0 if self.by_name else len(self._order))
        return item

    def register(
        self, name: str | None = None, *, order: int = 50, replace: bool = False, **info: Any
    ) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``, or ``@REGISTRY.register()`` on a class whose ``kind``
        attribute is its name."""

        def decorate(item: T) -> T:
            key = name if name is not None else getattr(item, "kind", None)
            if not isinstance(key, str) or not key:
                raise RuntimeError(f"{self.what} {item!r} has no name (give one, or a 'kind' attribute)")
            return self.add(key, item, order=order, replace=replace, **info)

        return decorate

    def remove(self, name: str) -> T:
        """Take a component out (tests that register a throw-away one)."""
        self._order.pop(name, None)
        self._info.pop(name, None)
        return self._items.pop(name)

    # reading -----------------------------------------------------------------------------------------
    def load(self) -> None:
        """Import every module of the registry's packages once: each registers its components."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in self.modules:
                importlib.import_module(module)
            for package_name in self.packages:
                package = importlib.import_module(package_name)
                for info in pkgutil.iter_modules(package.__path__, prefix=f"{package_name}."):
                    importlib.import_module(info.name)
            self._loaded = True
        finally:
            self._loading = False

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            self.load()
        return self._items[name]

    def get_or_fail(self, name: str) -> T:
        """The component, or an error naming the known ones (what a plan's typo gets)."""
        try:
            return self[name]
        except KeyError:
            raise NearmetalError(
                f"unknown {self.what} {name!r}", fix=f"use one of: {', '.join(sorted(self))}"
            ) from None

    def info(self, name: str) -> dict[str, Any]:
        self.load()
        return self._info[name]

    def _names(self) -> list[str]:
        self.load()
        return sorted(self._items, key=lambda n: (self._order[n], n))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        self.load()
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self.load()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self._items)} registered)"
