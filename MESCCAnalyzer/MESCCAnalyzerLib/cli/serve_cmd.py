"""``mescc serve``: the extension's five steps in a web page (trame-slicer), for a class."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import tempfile
from pathlib import Path

from ..errors import InputError
from ..outputs import claim_dir
from ..phantom import GRADES
from ..web.access import TOKEN_MIN_CHARS, check_token, is_loopback, new_token, page_urls

HELP = "serve the analysis as a web page (Slicer's views in the browser), e.g. for teaching"
DESCRIPTION = (
    "A page with the Slicer panel's five steps (study, registration, segmentation, metrics, "
    "report) and Slicer's own slice and 3D views, driven by the same MRML logic. --demo opens "
    "the phantom study ready to explore; --study serves a study folder (t2.nii.gz, t1.nii.gz, "
    "ct.nii.gz, pet_dicom/) inside --allowed-root. Served on 127.0.0.1 unless --host says "
    "otherwise; the page and its websocket need the session token, printed in the address "
    "to open (see docs/security.md)."
)
TOKEN_ENV = "MESCC_SERVE_TOKEN"


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", metavar="DIR", help="study folder laid out as the phantom's")
    source.add_argument("--demo", action="store_true", help="the synthetic phantom study")
    parser.add_argument(
        "--allowed-root",
        metavar="DIR",
        default=".",
        help="--study must lie inside this folder (default: the current directory)",
    )
    parser.add_argument(
        "--grade", default="2", choices=GRADES, help="Bilsky grade of the demo phantom (default 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="demo phantom random seed")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where the session's metrics.json, report.html and scene.mrb go "
        "(default: a new temporary folder)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080, 0: a free one)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the session token the page's address must carry (default: ${TOKEN_ENV}, "
        f"or a new random one); at least {TOKEN_MIN_CHARS} lower-case letters, digits, - or _",
    )


def resolve_study(study: str, allowed_root: str) -> Path:
    """The study folder, refused unless it lies inside ``allowed_root`` (symlinks resolved)."""
    root = Path(allowed_root).resolve()
    folder = Path(study).resolve()
    if not root.is_dir():
        raise InputError("the allowed root is not a folder", path=allowed_root)
    if folder != root and root not in folder.parents:
        raise InputError(
            f"outside the allowed folder {root}",
            path=study,
            hint="serve studies from inside --allowed-root",
        )
    if not (folder / "t2.nii.gz").is_file():
        raise InputError("no t2.nii.gz in the study folder", path=study)
    _refuse_links_out(folder, root)
    return folder


def _refuse_links_out(folder: Path, root: Path) -> None:
    """Refuse a study with any file or folder (t2, t1, ct, pet_dicom/ and its files, labels,
    anything the loader may read) that resolves outside ``root``, e.g. a symbolic link to
    another patient's data."""
    for parent, dirs, files in os.walk(folder):  # symbolic links to folders are not entered
        for name in sorted(dirs) + sorted(files):
            path = Path(parent) / name
            target = path.resolve()
            if target != root and root not in target.parents:
                raise InputError(
                    f"links outside the allowed folder {root}",
                    path=path,
                    hint="copy the file into the study instead of linking to it",
                )


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise InputError(
                f"--host must be an IP address or localhost, got {host!r}",
                hint="127.0.0.1 serves this machine only; 0.0.0.0 serves the network",
            ) from None


def _require_web_extra() -> None:
    """The page needs the optional ``web`` extra: say so in one line when it is missing."""
    if (
        importlib.util.find_spec("trame") is None
        or importlib.util.find_spec("trame_slicer") is None
    ):
        raise InputError(
            "the web page needs trame-slicer, which is not installed",
            hint="pip install 'mescc-analyzer[web]'",
        )


def run(args, term) -> int:
    _require_web_extra()
    study = resolve_study(args.study, args.allowed_root) if args.study else None
    _check_host(args.host)
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0-65535, got {args.port}")
    # There is no way to serve without a token: on the network, it is what keeps a class's
    # neighbours out; on this machine, what keeps other web pages out.
    token = new_token() if args.token is None else check_token(args.token)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mescc_serve."))
    if study is not None and (out.resolve() == study or study in out.resolve().parents):
        raise InputError("the output folder is inside the study", path=out, hint="give --out")
    claim_dir(out)  # a folder of the user's is refused, never written into
    term.stage("views")
    from ..web.app import MesccWebApp

    demo_folder = out / "demo_study" if args.demo else None
    app = MesccWebApp(
        out_dir=out,
        demo_folder=demo_folder,
        study_folder=study,
        grade=args.grade,
        seed=args.seed,
    )
    term.stage("study")
    app.load()  # the page opens on the study, ready to explore
    term.finish()
    print(f"session files: {out}", flush=True)

    def announce(port):
        for url in page_urls(args.host, port, token):
            print(f"open {url}", flush=True)
        if not is_loopback(args.host):
            print(
                "note: plain http: anyone who can watch this network can read the token and "
                "the images; serve a class on a network you trust (docs/security.md)",
                flush=True,
            )

    app.start(host=args.host, port=args.port, token=token, on_ready=announce)
    return 0
