"""Model files: weights, config, integer entropy tables and a fingerprint, in one torch file.

Layout of the dict saved with torch.save (loaded with weights_only=True):
  format: "vqcodec-model", version: 1,
  config: ModelConfig as a dict (the file rebuilds its own network),
  state_dict: the network's weights and codebooks,
  tables: int32 tensor (VQ stages coded, codes + 1, codes) of index frequencies,
  mode_tables: int32 tensor (mode contexts, 3) of token-mode frequencies,
  mv_tables: int32 tensor (vector contexts, component values) of motion-vector frequencies, and
  coef_tables: int32 tensor (qualities, coefficients, kinds, contexts, values) of scalar
          coefficient frequencies, and
  flag_tables: int32 tensor (contexts, 2) of static-group and block-skip flags (see entropy.py);
          all five absent in a training checkpoint; every entry is 1..65535, so each table is
          stored as int16 (entry - 32768; version 8 on, half the size) and loaded as int32,
  exact: the network's exact form (exact.convert: integer weights, biases, codebooks, tube basis
         and GELU table, int32 tensors by name), what the codec computes with (version 11 on),
  meta: free-form training facts (data, steps, hardware) for humans.
The fingerprint is the first 16 bytes of SHA-256 over the config, every tensor (sorted by
name, little-endian bytes), the tables and the exact form; a .vqv file records it and decode checks it.
Version 2 added the mode and vector tables, version 3 the coefficient and static-flag tables
(.vqv format 3), version 4 vector tables per component (quarter-pixel vectors, .vqv format 4), version 5 spatial index contexts and block skip flags
(.vqv format 5), version 6 spatial prediction in fresh groups (their mode contexts; .vqv format 6),
version 7 near modes in later groups (their mode contexts; .vqv format 7, whose contexts also adapt),
version 8 coefficient contexts with the neighbours' coefficients (6 times the rows; .vqv format 8,
which also overlaps the blocks' motion-compensated edges) and tables stored as int16, version 9
vector contexts of two checkerboard passes (4 times the rows; .vqv format 9), version 11 the exact
integer form of the network (.vqv format 14: pictures decoded exactly alike everywhere).
Older files still load as training starting points (--init), or to refit their tables, not as
codec models.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .errors import VqvError
from .exact import convert
from .model import ModelConfig, VQVAE

FORMAT = "vqcodec-model"
VERSION = 11
TABLE_OFFSET = 32768  # stored int16 = entry - TABLE_OFFSET
Tables = tuple  # (index, mode, vector, coefficient, static-flag tables), int32 tensors
TABLE_NAMES = ("tables", "mode_tables", "mv_tables", "coef_tables", "flag_tables")
DEFAULT_NAME = "default.pt"


@dataclass
class CodecModel:
    net: VQVAE
    tables: Tables | None
    fingerprint: bytes
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    exact: dict | None = None  # exact.convert(net), as the model file stores it

    @property
    def config(self) -> ModelConfig:
        return self.net.config

    def exact_tensors(self) -> dict:
        """The network's exact form: the file's, or (a network being trained) converted now."""
        if self.exact is None:
            self.exact = convert(self.net)
        return self.exact


def fingerprint(config: dict, state: dict, tables: Tables | None, exact: dict | None = None) -> bytes:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    for t in tables or ():
        h.update(t.cpu().to(torch.int32).contiguous().numpy().astype("<i4").tobytes())
    for name in sorted(exact or ()):
        h.update(b"exact." + name.encode())
        h.update(exact[name].cpu().to(torch.int32).contiguous().numpy().astype("<i4").tobytes())
    return h.digest()[:16]


def default_model_path() -> Path:
    try:
        p = Path(str(resources.files("vqcodec.models") / DEFAULT_NAME))
        if p.exists():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "models" / DEFAULT_NAME


def save_model(path: Path, net: VQVAE, tables: Tables | None, meta: dict | None = None,
               extra: dict | None = None) -> bytes:
    """Write atomically (temporary name, then rename). Returns the fingerprint."""
    config = net.config.to_dict()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    exact = convert(net) if tables is not None else None  # a finished model carries its exact form
    fp = fingerprint(config, state, tables, exact)
    payload = {"format": FORMAT, "version": VERSION, "config": config, "state_dict": state,
               "meta": meta or {}, "fingerprint": fp.hex()}
    if exact is not None:
        payload["exact"] = exact
    if tables is not None:
        payload.update({name: (t.cpu().to(torch.int32) - TABLE_OFFSET).to(torch.int16)
                        for name, t in zip(TABLE_NAMES, tables)})
    payload.update(extra or {})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return fp


def load_model(path: Path | None = None, device: str = "cpu", need_tables: bool = True) -> CodecModel:
    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        raise VqvError(f"model file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise VqvError(f"{path}: not a vqcodec model file ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise VqvError(f"{path}: not a vqcodec model file")
    if raw.get("version", 0) > VERSION:
        raise VqvError(f"{path}: model format version {raw['version']} is newer than this vqcodec supports")
    config = ModelConfig(**raw["config"])
    net = VQVAE(config)
    net.load_state_dict(raw["state_dict"])
    net.eval().to(device)
    tables = None
    if all(name in raw for name in TABLE_NAMES):  # int16 from version 8 on, int32 before
        tables = tuple(t.to(torch.int32) + TABLE_OFFSET if t.dtype == torch.int16 else t.to(torch.int32)
                       for t in (raw[name] for name in TABLE_NAMES))
    if need_tables and raw.get("version", 0) < VERSION:
        raise VqvError(f"{path}: a model file of an earlier vqcodec (version {raw.get('version')}); its entropy "
                       f"tables predate this vqcodec's .vqv format (model file version {VERSION}): refit them "
                       "(scripts/train_default.py --tables-only) or "
                       "start a training from it with --init")
    if need_tables and tables is None:
        raise VqvError(f"{path}: a training checkpoint without entropy tables; finalise it first "
                       "(vqcodec train writes finished models)")
    exact = raw.get("exact")
    if need_tables and not isinstance(exact, dict):
        raise VqvError(f"{path}: a model file without its exact integer form; rewrite it with this vqcodec")
    fp = fingerprint(raw["config"], raw["state_dict"], tables, exact)
    return CodecModel(net, tables, fp, raw.get("meta", {}), path, exact)


def inspect_model(path: Path) -> dict:
    """What a model file holds: fingerprint, architecture, entropy tables, training facts."""
    cm = load_model(path, need_tables=False)
    meta = dict(cm.meta)
    d = {"model": cm.fingerprint.hex(), "path": str(cm.path), "architecture": cm.config.to_dict(),
         "parameters": sum(p.numel() for p in cm.net.parameters()),
         "tables": (", ".join(f"{name} {list(t.shape)}" for name, t in zip(("index", "mode", "vector", "coefficient", "flag"),
                                                                       cm.tables)) if cm.tables is not None
                    else "none (a training checkpoint)")}
    for key in ("steps", "wall_s", "device", "world", "validation", "train"):
        if key in meta:
            d[key] = meta[key]
    if "data" in meta:
        d["data"] = f"{len(meta['data'])} clips"
    return d
