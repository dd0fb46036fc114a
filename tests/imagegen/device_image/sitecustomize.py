"""Put this folder first on PYTHONPATH and a Python process can import only what the GPU machine's image
holds (scripts/device-image-packages.txt), the wheels a device run carries there (the files named by
DEVICE_WHEELS, separated by ':'; scripts/gpu-models-wheels.txt, the model pipeline's, by default), the
standard library and the project's own packages: anything else
raises ModuleNotFoundError, as it would on the device. Distribution names are mapped to the import
names they install by reading this environment's metadata."""

import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import sys
from pathlib import Path

_SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
_OWN = {"diffusion", "model_store", "contract", "worker", "service", "imagegen", "evaluation", "bench", "gpu_preflight",
        "__main__",
        # the tests' own helper modules (tests/ is on sys.path in a pytest run)
        "conftest", "stores", "diffusers_folders", "worker_process", "tables"}


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _listed(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_norm(line.split("==")[0]))
    return names


def _import_names(dists: set[str]) -> set[str]:
    names = set()
    for dist in importlib.metadata.distributions():
        if _norm(dist.metadata["Name"] or "") not in dists:
            continue
        top = dist.read_text("top_level.txt")
        if top:
            names.update(top.split())
        for f in dist.files or []:
            first = str(f).split("/")[0]
            if "/" in str(f) and not first.endswith((".dist-info", ".data")):
                names.add(first)
            elif first.endswith(".py"):
                names.add(first[:-3])
    return {n for n in names if n.isidentifier()}


_WHEELS = os.environ.get("DEVICE_WHEELS") or str(_SCRIPTS / "gpu-models-wheels.txt")
_ALLOWED = set(sys.stdlib_module_names) | _OWN | _import_names(
    _listed(_SCRIPTS / "device-image-packages.txt").union(*(_listed(Path(p)) for p in _WHEELS.split(":"))))


class _DeviceImage(importlib.abc.MetaPathFinder):
    """A finder of this environment that finds nothing the device image lacks: so an import raises
    ModuleNotFoundError and importlib.util.find_spec returns None, as where the package is absent."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top not in _ALLOWED and not top.startswith("_"):
            return None
        return self.inner.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        # importlib.metadata asks the finders too: the installed metadata, unfiltered (a check by
        # distribution name reads the same on the device, where the image's packages are installed)
        find = getattr(self.inner, "find_distributions", None)
        return find(*args, **kwargs) if find else iter(())

    def invalidate_caches(self) -> None:
        if hasattr(self.inner, "invalidate_caches"):
            self.inner.invalidate_caches()


# built-in and frozen modules are the standard library's; every other finder (the path's) is filtered
sys.meta_path[:] = [f if f in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)
                    else _DeviceImage(f) for f in sys.meta_path]
