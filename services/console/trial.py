"""Try a flow: a stored call, or a pasted or uploaded ConversationEnded / ConversationExtracted / vendor
payload; the current configuration or an edited file; a dry run of extraction (heuristic or the
configured LLM) and routing. No side effect, nothing produced.

The dry run is `postcall try --json` (services/cli/dryrun.py) in a child process: the real extractor and
router code, without their metrics landing in the API's /metrics, and without a slow extraction or a
huge transcript holding the API's event loop. An edited file replaces its original in a private copy of
the folder (deleted after), so its problems are reported with file and line like `config validate`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response

from schemas.agent_loader import load_catalog
from schemas.events import MAX_ID_LENGTH, ConversationExtracted, DecisionTrace, Extraction
from services.console.access import PATH, Csrf, Viewer
from services.console.agents import relative
from services.console.render import fragment, page
from services.store import queries
from services.store.db import Store
from services.store.views import ConversationDetail

router = APIRouter(prefix=PATH, include_in_schema=False)
MAX_PAYLOAD = 5 * 1024 * 1024
TIMEOUT_SECONDS = 180.0
RETRY_AFTER_SECONDS = 30


class DryRuns:
    """At most `running` dry runs at once per API process and `waiting` more queued behind them; one more is
    refused (429) rather than queued: each may take TIMEOUT_SECONDS and make paid LLM calls."""

    def __init__(self, running: int, waiting: int) -> None:
        self.at_once = running
        self.running = asyncio.Semaphore(running)
        self.limit = running + waiting
        self.admitted = 0

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        if self.admitted >= self.limit:
            raise HTTPException(
                429,
                f"{self.limit} dry runs are running or waiting already ({self.at_once} at a time): try again in "
                f"{RETRY_AFTER_SECONDS} s",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.admitted += 1  # no await between the check and this: one event loop, no race
        try:
            yield
        finally:
            self.admitted -= 1


_DRY_RUNS = DryRuns(running=2, waiting=2)


@dataclass
class TryResult:
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    extraction: Extraction | None = None
    trace: DecisionTrace | None = None
    error: str | None = None


def _config_dir(request: Request) -> Path | None:
    found = request.app.state.settings.console.config_dir
    return Path(found) if found is not None else None


def config_files(root: Path | None) -> list[str]:
    if root is None or not root.is_dir():
        return []
    return [relative(f.path, root) for f in load_catalog(root).files.values()]


@router.get("/try")
async def try_form(request: Request, who: Viewer, conversation_id: str = "", file: str = "") -> Response:
    root = _config_dir(request)
    files = config_files(root)
    chosen = (
        file if file in files else _file_of(root, await _stored(request, conversation_id)) if conversation_id else ""
    )
    text = (root / chosen).read_text(errors="replace") if root and chosen in files else ""
    context = {
        "files": files,
        "conversation_id": conversation_id,
        "file": chosen,
        "config_text": text,
        "configured": root is not None,
    }
    return page(request, "try.html", context)


@router.get("/try/config")
async def config_text(request: Request, who: Viewer, file: str = "") -> Response:
    """The text of one configuration file, for the edit box (only files of the folder, by name)."""
    root = _config_dir(request)
    if root is None or file not in config_files(root):
        raise HTTPException(404, f"no configuration file {file!r}")
    return fragment(
        request, "try_config.html", {"file": file, "config_text": (root / file).read_text(errors="replace")}
    )


# a pasted payload or edited file may be as large as an uploaded one (the form parser's default part is 1 MiB);
# the fields' max_length refuses more, with the field's name
@router.post("/try", dependencies=[Csrf], form_limits={"max_part_size": MAX_PAYLOAD + 1})
async def run_try(
    request: Request,
    who: Viewer,
    source: Annotated[str, Form()] = "stored",
    conversation_id: Annotated[str, Form(max_length=MAX_ID_LENGTH)] = "",
    use_stored_extraction: Annotated[str, Form()] = "",
    payload: Annotated[str, Form(max_length=MAX_PAYLOAD)] = "",
    upload: UploadFile | None = None,
    config: Annotated[str, Form()] = "current",
    file: Annotated[str, Form(max_length=500)] = "",
    config_text: Annotated[str, Form(max_length=MAX_PAYLOAD)] = "",
    provider: Annotated[str, Form()] = "",
    agent: Annotated[str, Form(max_length=MAX_ID_LENGTH)] = "",
) -> Response:
    root = _config_dir(request)
    if root is None:
        raise HTTPException(
            409, "the console does not know the agent configuration folder (POSTCALL_CONSOLE__CONFIG_DIR)"
        )
    if not root.is_dir():  # gone, or never mounted: nothing to copy an edited file into, nothing to run
        raise HTTPException(
            409, f"the agent configuration folder {root} is not a folder (POSTCALL_CONSOLE__CONFIG_DIR)"
        )
    data = await _input(request, source, conversation_id, bool(use_stored_extraction), payload, upload)
    if provider not in ("", "heuristic", "openai"):
        raise HTTPException(400, f"unknown provider {provider!r}")
    files = config_files(root)
    if config == "edited" and file not in files and file != "":
        raise HTTPException(400, f"{file!r} is not a file of the configuration folder")
    with _DRY_RUNS.place(), _folder(root, file or "edited.yaml" if config == "edited" else None, config_text) as folder:
        result = await dry_run(data, folder, provider or None, agent.strip() or None)
        for problem in result.data.get("problems", []):
            result.data.setdefault("problem_lines", []).append(problem.replace(str(folder) + "/", ""))
    return fragment(request, "try_result.html", {"r": result, "data": result.data})


async def _input(
    request: Request,
    source: str,
    conversation_id: str,
    stored_extraction: bool,
    payload: str,
    upload: UploadFile | None,
) -> bytes:
    if source == "stored":
        detail = await _stored(request, conversation_id.strip())
        if detail is None or detail.event is None:
            raise HTTPException(404, f"no stored event for conversation {conversation_id!r}")
        if stored_extraction and detail.extractions:
            return as_extracted(detail).model_dump_json().encode()
        return detail.event.model_dump_json().encode()
    if source == "upload":
        if upload is None:
            raise HTTPException(400, "choose a file to upload")
        data = await upload.read(MAX_PAYLOAD + 1)
        if len(data) > MAX_PAYLOAD:
            raise HTTPException(413, f"the file is over {MAX_PAYLOAD // 1024 // 1024} MiB")
        return data
    if source == "paste":
        if not payload.strip():
            raise HTTPException(400, "paste a ConversationEnded, a ConversationExtracted or a vendor payload")
        return payload.encode()
    raise HTTPException(400, f"unknown source {source!r}")


async def _stored(request: Request, conversation_id: str) -> ConversationDetail | None:
    if not conversation_id:
        return None
    store: Store = request.app.state.store
    async with store.read() as conn:
        return await queries.get_conversation(conn, conversation_id)


def _file_of(root: Path | None, detail: ConversationDetail | None) -> str:
    if root is None or not root.is_dir() or detail is None or detail.event is None:  # no folder: no file of it
        return ""
    agent = detail.event.agent
    config = load_catalog(root).trial().lookup(agent.id, agent.version)
    return relative(config.source, root) if config is not None else ""


def as_extracted(detail: ConversationDetail) -> ConversationExtracted:
    """The stored event with its newest stored extraction, to route as it was extracted."""
    assert detail.event is not None
    view = detail.extractions[-1]
    extraction = Extraction.model_validate(
        view.model_dump(exclude={"event_id", "extracted_at", "needs_review", "reextract_of"})
    )
    return ConversationExtracted(
        event_id=view.event_id, conversation=detail.event, extraction=extraction, extracted_at=view.extracted_at
    )


@contextlib.contextmanager
def _folder(root: Path, edited: str | None, text: str) -> Iterator[Path]:
    """The folder itself, or a private copy of its YAML files with `edited` replaced by `text`."""
    if edited is None:
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="postcall-try-") as tmp:
        copy = Path(tmp) / "agents"
        shutil.copytree(root, copy, ignore=lambda _d, names: [n for n in names if n.startswith(".")])
        target = (copy / edited).resolve()
        if copy.resolve() not in target.parents:
            raise HTTPException(400, f"{edited!r} is outside the configuration folder")
        target.write_text(text)
        yield copy


async def dry_run(data: bytes, folder: Path, provider: str | None, agent: str | None = None) -> TryResult:
    args = [sys.executable, "-m", "services.cli.main", "try", "-c", "-", "-a", str(folder), "--json"]
    if provider:
        args.append(f"--provider={provider}")
    if agent:
        args.append(f"--agent={agent}")  # one argument: a value starting with '-' stays a value
    async with _DRY_RUNS.running:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **_ONE_LINE},
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(data), TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            return TryResult(False, error=f"the dry run took longer than {TIMEOUT_SECONDS:.0f} s and was stopped")
    try:
        parsed = orjson.loads(out)
    except orjson.JSONDecodeError:
        return TryResult(False, error=_last_words(err.decode(errors="replace")))
    result = TryResult(bool(parsed.get("ok")), parsed, error=parsed.get("error"))
    if parsed.get("extraction"):
        result.extraction = Extraction.model_validate(parsed["extraction"])
    if parsed.get("decision_trace"):
        result.trace = DecisionTrace.model_validate(parsed["decision_trace"])
    return result


# a usage error's box as wide as its text: wrapped to 80 columns, a path was cut mid-word ("age nts")
_ONE_LINE = {"COLUMNS": "4096", "TERMINAL_WIDTH": "4096"}  # rich's and typer's widths


def _last_words(stderr: str) -> str:
    """What the command said last: the text of the box a usage error is drawn in (typer's "╭─ Error ─╮", wrapped
    to the width of a terminal), else the last line (a traceback's is the exception, after its box)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tops = [i for i, line in enumerate(lines) if line.startswith("╭─ Error ")]
    if tops and lines[-1].startswith("╰"):
        inside = " ".join(line.strip("│ ") for line in lines[tops[-1] + 1 : -1]).split()
        if inside:
            return " ".join(inside)
    return lines[-1] if lines else "the dry run failed"
