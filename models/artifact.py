"""Versioned ONNX model artifacts: write, list, verify and load.

Layout (one folder per model version, never modified once written)::

    <root>/<name>/index.json              versions in creation order
    <root>/<name>/<version>/model.onnx
    <root>/<name>/<version>/manifest.json

The version is content-addressed: ``"v-"`` plus the first 12 hex digits of a SHA-256 over the
whole manifest (which holds the SHA-256 of ``model.onnx``), except the version itself and the
store's bookkeeping of when and after which version it was written (``created_at``,
``parent_version``; ``index.json`` keeps them too). Retraining on the same data with the same code,
libraries and parameters therefore yields the same version, and writing it again is a no-op.
A version string is checked against that pattern before any path is built from it.

Loading verifies, in order, that the manifest is readable and names this model and version,
that ``model.onnx`` hashes to the manifest's ``sha256``, that the manifest hashes to its version
(so a threshold edited after publishing is refused like a flipped byte in the model), that the
manifest's feature schema is exactly the schema the running code computes, that onnxruntime
accepts the graph, and that one smoke inference returns finite numbers. Any failure raises
:class:`ArtifactError` with a message that says which check failed, so an operator can keep
serving the previous version.

This module never imports pyflink; Redis is only touched through a client the caller passes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
REGISTRY_KEY = "vigil:registry:{name}:production"
FEATURE_DTYPE = "float32"

# Manifest keys the caller of ArtifactStore.write may provide; everything else is stamped here.
_CALLER_KEYS = frozenset(
    {"feature_schema", "inputs", "outputs", "opset", "training_data", "evaluation", "postprocessing",
     "parent_version", "description", "git_commit"}
)
_REQUIRED_CALLER_KEYS = ("feature_schema", "inputs", "outputs", "training_data", "postprocessing")
VERSION_PATTERN = re.compile(r"v-[0-9a-f]{12}")
# Manifest keys the content address leaves out: the address itself, and when and after which
# version the store wrote it (covering those would make each rewrite of an artifact a new version).
UNADDRESSED_KEYS = frozenset({"version", "created_at", "parent_version"})
_ADDRESS_SCHEME = b"vigil.artifact-address/v2\x00"  # v1 hashed the model, schema, post-processing and data only


class ArtifactError(Exception):
    """An artifact cannot be written, found, verified or loaded. The message says which check failed."""


# --------------------------------------------------------------------------------------------
# Canonical encodings
# --------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays and tuples turned into plain JSON types.

    Non-finite floats are refused: a manifest must round-trip through strict JSON.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        if not math.isfinite(f):
            raise ArtifactError(f"manifest values must be finite numbers. Got {f!r}.")
        return f
    if obj is None or isinstance(obj, str):
        return obj
    raise ArtifactError(f"manifest values must be JSON types. Got {type(obj).__name__}: {obj!r}.")


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace, shortest float repr)."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def schema_entries(schema: Sequence[str] | Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """A feature schema as manifest entries ``[{"name", "dtype": "float32"}, ...]``, order kept."""
    out: list[dict[str, str]] = []
    for item in schema:
        if isinstance(item, str):
            out.append({"name": item, "dtype": FEATURE_DTYPE})
        elif isinstance(item, Mapping) and "name" in item:
            out.append({"name": str(item["name"]), "dtype": str(item.get("dtype", FEATURE_DTYPE))})
        else:
            raise ArtifactError(f"feature_schema entries must be names or {{name, dtype}} dicts. Got {item!r}.")
    return out


def content_version(manifest: Mapping[str, Any]) -> str:
    """The content address of a manifest: same content, same version.

    It covers every key but :data:`UNADDRESSED_KEYS`, the ``sha256`` of ``model.onnx`` among them,
    so it covers the model too once that hash is checked against the file.
    """
    addressed = {k: v for k, v in manifest.items() if k not in UNADDRESSED_KEYS}
    return "v-" + hashlib.sha256(_ADDRESS_SCHEME + canonical_json(addressed)).hexdigest()[:12]


def check_version(version: object) -> str:
    """``version`` if it is a content address (``"v-"`` and 12 hex digits), else :class:`ArtifactError`.

    Every store method that takes a version calls this before it builds a path, so that a version
    from a Kafka topic or Redis (``"../x"``) can never leave the store.
    """
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise ArtifactError(f"The 'version' parameter must be a content address ('v-' and 12 hex digits). "
                            f"Got {str(version)[:60]!r}.")
    return version


def library_versions() -> dict[str, str | None]:
    """Versions of every library that shapes an artifact (``None`` if not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("sklearn", "skl2onnx", "onnx", "onnxruntime", "numpy", "river"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, or ``None`` if unknown."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = res.stdout.strip()
    return sha if res.returncode == 0 and len(sha) == 40 else None


def utc_now_iso() -> str:
    """Current time, timezone-aware UTC, ISO 8601."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def onnx_opsets(onnx_bytes: bytes) -> dict[str, int]:
    """``{domain: version}`` the graph imports (``""`` is the default ONNX domain)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return {op.domain: int(op.version) for op in model.opset_import}


# --------------------------------------------------------------------------------------------
# Loaded model
# --------------------------------------------------------------------------------------------


def session_options() -> Any:
    """Single-threaded, sequential onnxruntime options: one session per model per worker."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class LoadedModel:
    """A verified artifact: its manifest and one onnxruntime session.

    Build it with :meth:`ArtifactStore.load` (from disk) or :meth:`from_bytes` (in memory, used by
    training before anything is written). Both run the same schema check and smoke inference.
    """

    def __init__(self, manifest: Mapping[str, Any], session: Any) -> None:
        self.manifest: dict[str, Any] = dict(manifest)
        self.session = session
        self.name: str = str(self.manifest.get("name"))
        self.version: str = str(self.manifest.get("version"))
        self.input_names: tuple[str, ...] = tuple(i.name for i in session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
        # The pybind session skips the Python wrapper's per-call input validation (~2 us of a
        # ~6 us call). Inputs are built by the model classes, so that validation adds nothing.
        self._fast = getattr(session, "_sess", None)  # noqa: SLF001 - onnxruntime's pybind session
        self._out_list = list(self.output_names)

    @property
    def raw_run(self) -> Any | None:
        """The pybind session's ``run(output_names, feeds, options)``, None where the session has none."""
        return self._fast.run if self._fast is not None else None

    @property
    def postprocessing(self) -> dict[str, Any]:
        return self.manifest.get("postprocessing", {})

    @property
    def feature_schema(self) -> tuple[str, ...]:
        return tuple(e["name"] for e in self.manifest.get("feature_schema", []))

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run the graph: ``feeds`` maps input names to arrays; returns outputs in graph order."""
        outs = self._out_list if output_names is None else list(output_names)
        if self._fast is not None:
            return self._fast.run(outs, feeds, None)  # type: ignore[no-any-return]
        return self.session.run(outs, dict(feeds))  # type: ignore[no-any-return]

    @classmethod
    def from_bytes(cls, onnx_bytes: bytes, manifest: Mapping[str, Any],
                   expected_schema: Sequence[str]) -> LoadedModel:
        """Verify ``manifest`` against ``expected_schema``, open a session, smoke-test it."""
        label = f"{manifest.get('name', '?')} {manifest.get('version', '?')}"
        check_schema(manifest, expected_schema, label)
        try:
            import onnxruntime as ort

            sess = ort.InferenceSession(onnx_bytes, session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"onnxruntime cannot load {label}: {exc}") from exc
        model = cls(manifest, sess)
        model._smoke(label, len(tuple(expected_schema)))
        return model

    def _smoke(self, label: str, n_features: int) -> None:
        inputs = self.session.get_inputs()
        first_shape = inputs[0].shape
        if len(first_shape) != 2 or (isinstance(first_shape[1], int) and first_shape[1] != n_features):
            raise ArtifactError(
                f"input {inputs[0].name!r} of {label} has shape {first_shape}; the feature schema has "
                f"{n_features} features")
        feeds = {}
        for inp in inputs:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            if inp.type != "tensor(float)":
                raise ArtifactError(f"input {inp.name!r} of {label} is {inp.type}; expected tensor(float)")
            feeds[inp.name] = np.zeros(shape, dtype=np.float32)
        try:
            outs = self.session.run(None, feeds)
        except Exception as exc:
            raise ArtifactError(f"smoke inference failed for {label}: {exc}") from exc
        for name, arr in zip(self.output_names, outs, strict=True):
            a = np.asarray(arr)
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ArtifactError(f"smoke inference of {label} gave non-finite values in output {name!r}")


def check_schema(manifest: Mapping[str, Any], expected_schema: Sequence[str], label: str) -> None:
    """Raise :class:`ArtifactError` unless the manifest's feature schema equals ``expected_schema``."""
    entries = manifest.get("feature_schema")
    if not isinstance(entries, list):
        raise ArtifactError(f"manifest of {label} has no feature_schema list")
    got = tuple(str(e.get("name")) for e in entries)
    want = tuple(expected_schema)
    if got != want:
        diff = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        g = got[diff] if diff < len(got) else "<end>"
        w = want[diff] if diff < len(want) else "<end>"
        raise ArtifactError(
            f"feature schema mismatch for {label}: manifest has {len(got)} features, code expects "
            f"{len(want)}; first difference at position {diff}: manifest {g!r}, code {w!r}")
    bad = [e for e in entries if e.get("dtype") != FEATURE_DTYPE]
    if bad:
        raise ArtifactError(f"feature schema mismatch for {label}: dtype must be {FEATURE_DTYPE}, got {bad[0]}")


def stamp_manifest(name: str, onnx_bytes: bytes, manifest_fields: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of an artifact, version included, as a store would write it (less its parent).

    Training uses it to know a version before publishing it (the classifier records the versions
    of the models it was trained on). ``manifest_fields`` is described at :meth:`ArtifactStore.write`.
    """
    unknown = set(manifest_fields) - _CALLER_KEYS
    if unknown:
        raise ArtifactError(
            f"The 'manifest_fields' parameter of ArtifactStore.write got unknown keys {sorted(unknown)}; "
            f"allowed: {sorted(_CALLER_KEYS)}.")
    missing = [k for k in _REQUIRED_CALLER_KEYS if k not in manifest_fields]
    if missing:
        raise ArtifactError(f"The 'manifest_fields' parameter of ArtifactStore.write lacks {missing}.")
    td = manifest_fields["training_data"]
    if not isinstance(td, Mapping) or "fingerprint" not in td:
        raise ArtifactError("The 'training_data' manifest field must be a dict with a 'fingerprint'.")
    manifest: dict[str, Any] = {
        "name": name,
        "sha256": sha256_hex(onnx_bytes),
        "description": to_jsonable(manifest_fields.get("description", "")),
        "feature_schema": schema_entries(manifest_fields["feature_schema"]),
        "inputs": to_jsonable(manifest_fields["inputs"]),
        "outputs": to_jsonable(manifest_fields["outputs"]),
        "opset": to_jsonable(manifest_fields.get("opset") or onnx_opsets(onnx_bytes)),
        "library_versions": library_versions(),
        "training_data": to_jsonable(td),
        "evaluation": to_jsonable(manifest_fields.get("evaluation", {})),
        "postprocessing": to_jsonable(manifest_fields["postprocessing"]),
        # a copy of an artifact keeps the commit it was trained at; a new one names the current one
        "git_commit": manifest_fields["git_commit"] if "git_commit" in manifest_fields else git_commit(),
        "parent_version": None,
        "created_at": utc_now_iso(),
    }
    manifest["version"] = content_version(manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------


class ArtifactStore:
    """Versioned artifacts of every model under one root directory.

    Writes are atomic (a complete temporary folder is renamed into place) and idempotent (the
    version is content-addressed). ``index.json`` lists versions in creation order.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def _model_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ArtifactError(f"The 'name' parameter of ArtifactStore must be a plain folder name. Got {name!r}.")
        return self.root / name

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        d = self._model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------------------

    def _read_index(self, name: str) -> list[dict[str, Any]]:
        path = self._model_dir(name) / INDEX_FILE
        if path.exists():
            try:
                data = json.loads(path.read_text())
                return list(data["versions"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ArtifactError(f"cannot read {path}: {exc}") from exc
        # No index (e.g. folders copied by hand): order what is there by creation time.
        entries = []
        d = self._model_dir(name)
        if d.is_dir():
            for sub in d.iterdir():
                mf = sub / MANIFEST_FILE
                if sub.is_dir() and VERSION_PATTERN.fullmatch(sub.name) and mf.exists():
                    try:
                        m = json.loads(mf.read_text())
                        entries.append({"version": sub.name, "created_at": m.get("created_at", ""),
                                        "parent_version": m.get("parent_version")})
                    except (OSError, ValueError):
                        continue
        return sorted(entries, key=lambda e: (str(e["created_at"]), e["version"]))

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` in creation order (empty if none)."""
        return [str(e["version"]) for e in self._read_index(name)]

    def latest(self, name: str) -> str | None:
        """The most recently written version of ``name``, or ``None``."""
        v = self.versions(name)
        return v[-1] if v else None

    def path(self, name: str, version: str) -> Path:
        """The folder of one version (which need not exist); the version must be a content address."""
        return self._model_dir(name) / check_version(version)

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        """The manifest of one version (not verified against the model file)."""
        path = self.path(name, version) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ArtifactError(f"no artifact {name} {version} under {self.root} (missing {path.name})") from exc
        except (OSError, ValueError, RecursionError) as exc:
            raise ArtifactError(f"cannot read manifest of {name} {version}: {exc}") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"manifest of {name} {version} is a JSON {type(data).__name__}, not an object")
        return data

    def verify(self, name: str, version: str) -> tuple[dict[str, Any], bytes]:
        """The manifest and model bytes of one version, after the integrity checks: the manifest names
        this model and version, ``model.onnx`` hashes to its ``sha256``, and the manifest hashes to
        the version. Raises :class:`ArtifactError` naming the first check that failed."""
        label = f"{name} {version}"
        manifest = self.manifest(name, version)
        if manifest.get("name") != name or manifest.get("version") != version:
            raise ArtifactError(
                f"manifest of {label} names {manifest.get('name')} {manifest.get('version')}")
        path = self.path(name, version) / MODEL_FILE
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read {MODEL_FILE} of {label}: {exc}") from exc
        digest = sha256_hex(data)
        if digest != manifest.get("sha256"):
            raise ArtifactError(
                f"sha256 mismatch for {label}: manifest says {manifest.get('sha256')}, file hashes to {digest}")
        address = content_version(manifest)
        if address != version:
            raise ArtifactError(
                f"content address mismatch for {label}: the manifest hashes to {address}; it was changed "
                f"after {version} was published")
        return manifest, data

    def load(self, name: str, version: str | None, expected_schema: Sequence[str]) -> LoadedModel:
        """Load and verify one version (``None`` = latest). Raises :class:`ArtifactError` on any mismatch."""
        if version is None:
            version = self.latest(name)
            if version is None:
                raise ArtifactError(f"no versions of {name} under {self.root}")
        manifest, data = self.verify(name, version)
        return LoadedModel.from_bytes(data, manifest, expected_schema)

    # -- writing ------------------------------------------------------------------------------

    def build_manifest(self, name: str, onnx_bytes: bytes, manifest_fields: Mapping[str, Any]) -> dict[str, Any]:
        """The complete manifest ``write`` would store (the version included), without writing."""
        self._model_dir(name)
        manifest = stamp_manifest(name, onnx_bytes, manifest_fields)
        parent = manifest_fields.get("parent_version", self.latest(name))
        manifest["parent_version"] = parent if parent != manifest["version"] else None
        return manifest

    def write(self, name: str, onnx_bytes: bytes, manifest_fields: Mapping[str, Any]) -> str:
        """Store a new version and return it; writing an existing version changes nothing.

        ``manifest_fields`` holds feature_schema (names or {name, dtype}), inputs, outputs,
        training_data ({fingerprint, sources}), postprocessing, and optionally evaluation, opset,
        description, parent_version (default: the current latest) and git_commit (default: the
        commit of this source tree; a copy of an artifact from another store passes its own).
        """
        manifest = self.build_manifest(name, onnx_bytes, manifest_fields)
        version = manifest["version"]
        model_dir = self._model_dir(name)
        with self._lock(name):
            final = self.path(name, version)
            if not final.exists():
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
                try:
                    os.chmod(tmp, 0o755)  # mkdtemp makes it private; readers may be other users
                    _write_synced(tmp / MODEL_FILE, onnx_bytes)
                    _write_synced(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode())
                    os.rename(tmp, final)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            else:
                existing = self.manifest(name, version)
                if existing.get("sha256") != manifest["sha256"]:
                    raise ArtifactError(
                        f"version {version} of {name} exists with a different sha256 "
                        f"({existing.get('sha256')} vs {manifest['sha256']}); refusing to overwrite")
                manifest = existing
            index = self._read_index(name)
            has_index = (model_dir / INDEX_FILE).exists()
            if version not in {e["version"] for e in index}:
                index.append({"version": version, "created_at": manifest["created_at"],
                              "parent_version": manifest.get("parent_version")})
            elif has_index:
                return str(version)
            _write_synced(model_dir / f".{INDEX_FILE}.tmp",
                          json.dumps({"name": name, "versions": index}, indent=2).encode())
            os.replace(model_dir / f".{INDEX_FILE}.tmp", model_dir / INDEX_FILE)
        return str(version)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def resolve_version(name: str, store: ArtifactStore, redis_client: Any | None = None) -> str | None:
    """The version of ``name`` to serve.

    The Redis key ``vigil:registry:{name}:production`` wins when a client is given, Redis answers
    and the version it names exists in ``store``; otherwise (no client, Redis down, key unset or
    naming an unknown version) the store's latest version. ``None`` if the store has none.
    """
    if redis_client is not None:
        key = REGISTRY_KEY.format(name=name)
        try:
            raw = redis_client.get(key)
        except Exception as exc:
            log.warning("registry lookup %s failed (%s); using the store's latest", key, exc)
            raw = None
        if raw is not None:
            v = raw.decode() if isinstance(raw, bytes) else str(raw)
            if v in store.versions(name):
                return v
            log.warning("registry %s names %s, which %s does not hold; using the latest", key, v, store)
    return store.latest(name)
