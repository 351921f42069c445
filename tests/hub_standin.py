"""A stand-in for the Hugging Face Hub API, for tests: what would be uploaded is copied into a local "remote" folder.

`install(monkeypatch, root)` patches `huggingface_hub.HfApi` itself (not one instance, not `create_commit`), so every
path that reaches the Hub through an `HfApi` - transformers' shared `hf_api()` included - lands here:

- `create_repo` / `whoami` answer offline, as the Hub would for a logged-in user (`created` records each call's
  repo_type and space_sdk);
- `upload_folder` applies the same filters as the real one (`allow_patterns`, `ignore_patterns` plus
  huggingface_hub's `DEFAULT_IGNORE_PATTERNS`), copies the files as they are AT THE CALL into
  `root/uploads/NNN/` (one snapshot per commit) and into `root/repo/` (the repo's current state: later commits
  overwrite files, nothing is deleted, as on the Hub), and records the call; with `run_as_future=True` it returns
  an already-done `Future`, as the Trainer's intermediate pushes expect;
- anything else that would reach the network (`create_commit`, `upload_file`, `preupload_lfs_files`) fails the
  test loudly, so an upload path this stand-in does not know cannot pass unnoticed.
"""

import dataclasses
import shutil
from concurrent.futures import Future
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS, CommitInfo, RepoUrl
from huggingface_hub.utils import filter_repo_objects

USER = "user"


@dataclasses.dataclass
class Upload:
    repo_id: str
    path_in_repo: str
    commit_message: str | None
    token: object  # what the caller passed (None: the real API would read HF_TOKEN)
    run_as_future: bool
    snapshot: Path  # a copy of exactly what was uploaded, relative to path_in_repo
    files: list[str]
    repo_type: str | None = None  # None: a model repo


class LocalHub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.repo = self.root / "repo"
        self.uploads: list[Upload] = []
        self.created: list[dict] = []
        self.repo.mkdir(parents=True, exist_ok=True)

    # -- the HfApi methods, patched onto the class (so `self` below is the HfApi instance: use `hub` instead)
    def patches(self) -> dict:
        hub = self

        def create_repo(api, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
            hub.created.append({"repo_id": repo_id, "token": token, "private": private, "exist_ok": exist_ok,
                                "repo_type": repo_type, "space_sdk": kwargs.get("space_sdk")})
            if "/" not in repo_id:
                repo_id = f"{USER}/{repo_id}"
            return RepoUrl(f"https://huggingface.co/{repo_id}", endpoint="https://huggingface.co")

        def whoami(api, token=None, **kwargs):
            return {"type": "user", "name": USER, "orgs": []}

        def upload_folder(api, *, repo_id, folder_path, path_in_repo=None, commit_message=None, token=None,
                          allow_patterns=None, ignore_patterns=None, delete_patterns=None, run_as_future=False,
                          repo_type=None, **kwargs):
            return hub._upload_folder(repo_id, Path(folder_path), path_in_repo or "", commit_message, token,
                                      allow_patterns, ignore_patterns, run_as_future, repo_type)

        def offline(name):
            def refuse(api, *args, **kwargs):
                raise AssertionError(f"HfApi.{name} called: the Hub stand-in only handles upload_folder")

            return refuse

        return {"create_repo": create_repo, "whoami": whoami, "upload_folder": upload_folder,
                **{name: offline(name) for name in ("create_commit", "upload_file", "preupload_lfs_files")
                   if hasattr(HfApi, name)}}

    def _upload_folder(self, repo_id, folder, path_in_repo, commit_message, token, allow_patterns, ignore_patterns,
                       run_as_future, repo_type=None):
        if isinstance(ignore_patterns, str):
            ignore_patterns = [ignore_patterns]
        ignore_patterns = list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        files = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        snapshot = self.root / "uploads" / f"{len(self.uploads):03d}"
        for name in files:
            for target in (snapshot / name, self.repo / path_in_repo / name):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, target)
        snapshot.mkdir(parents=True, exist_ok=True)
        self.uploads.append(Upload(repo_id, path_in_repo, commit_message, token, bool(run_as_future), snapshot,
                                   files, repo_type))
        info = CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{len(self.uploads):040x}",
                          commit_message=commit_message or "", commit_description="", oid=f"{len(self.uploads):040x}")
        if not run_as_future:
            return info
        future = Future()
        future.set_result(info)
        return future


def install(monkeypatch, root: Path) -> LocalHub:
    hub = LocalHub(root)
    for name, function in hub.patches().items():
        monkeypatch.setattr(HfApi, name, function)
    return hub
