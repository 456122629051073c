"""How a download reports its progress, and the tqdm stand-in huggingface_hub reports through.

The hub never draws: a download tells a `DownloadProgress` what happens (the front end's
implementation draws a bar; the default draws nothing). huggingface_hub, though, only reports
through a tqdm class it builds itself (`tqdm_class=`), so `bar_class` makes one whose
instances forward to a `DownloadProgress`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class DownloadProgress(Protocol):
    """What a download reports while its bytes flow. One object follows one download at a time."""

    def start(self, label: str, total: float | None, completed: int) -> None:
        """Bytes are about to flow for `label` (the file name): `total` expected (None when
        unknown), `completed` already on disk (a resumed download). Not called for a download
        that fails before any transfer (on its metadata request, say)."""

    def advance(self, amount: float) -> None:
        """`amount` more bytes arrived."""

    def set_total(self, total: float | None) -> None:
        """The expected size changed (the transfer learnt it late)."""

    def stop(self) -> None:
        """The download is over, finished or failed; called once, whether or not it started."""


class SilentProgress:
    """A `DownloadProgress` that shows nothing: what a download reports to by default."""

    def start(self, label: str, total: float | None, completed: int) -> None:
        pass

    def advance(self, amount: float) -> None:
        pass

    def set_total(self, total: float | None) -> None:
        pass

    def stop(self) -> None:
        pass


def bar_class(progress: DownloadProgress, label: str) -> type[_Bar]:
    """A tqdm stand-in class reporting to `progress` (hf_hub_download wants a class, not an
    object). Always given, even when nothing is shown: without it huggingface_hub would draw
    its own tqdm bar on stderr."""
    return type("BoundBar", (_Bar,), {"progress": progress, "label": label})


class _Bar:
    """The part of tqdm's interface that huggingface_hub's downloaders use.

    hf_hub_download builds `tqdm_class(desc=, total=, initial=, unit=, unit_scale=)` for plain HTTP
    (Xet adds `position=`, `bar_format=`, `leave=`), uses it as a context manager, calls
    `update()`, `set_postfix_str()`, `refresh()` and `close()`, and reads/writes `total` and `n`.
    Its `desc` is a truncated URL, so the report carries the file name instead.
    """

    progress: ClassVar[DownloadProgress]
    label: ClassVar[str]

    def __init__(
        self, *_args: Any, total: float | None = None, initial: float = 0, **_kwargs: Any
    ) -> None:
        self.n = initial or 0
        self._total = total
        self.progress.start(self.label, total, int(self.n))

    @property
    def total(self) -> float | None:
        return self._total

    @total.setter
    def total(self, value: float | None) -> None:
        self._total = value
        self.progress.set_total(value)

    def update(self, n: float = 1) -> None:
        self.n += n
        self.progress.advance(n)

    def update_transfer(self, n: float = 1) -> None:
        """Network bytes, reported apart by Xet; defining this makes Xet open one bar, not two."""

    def set_transfer_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Xet's speed text for the transfer bar: a progress display computes its own speed."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """tqdm's free-form suffix: a progress display computes speed and ETA itself."""

    def refresh(self) -> None:
        """A progress display refreshes on its own schedule."""

    def close(self) -> None:
        """The progress is stopped once by the download, after huggingface_hub is done."""

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
