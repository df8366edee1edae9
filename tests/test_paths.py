from pathlib import Path

from suprem_auto.paths import resolve_roots


def test_flag_beats_env_and_suprem_env_beats_nnunet_env(tmp_path: Path) -> None:
    env = {"SUPREM_RAW": str(tmp_path / "s_raw"), "nnUNet_raw": str(tmp_path / "n_raw"),
           "nnUNet_preprocessed": str(tmp_path / "n_pre")}
    roots = resolve_roots(raw=str(tmp_path / "flag_raw"), env=env)
    assert roots.raw == (tmp_path / "flag_raw").resolve()
    roots = resolve_roots(env=env)
    assert roots.raw == (tmp_path / "s_raw").resolve()
    assert roots.preprocessed == (tmp_path / "n_pre").resolve()


def test_default_folder_when_nothing_is_set() -> None:
    roots = resolve_roots(env={})
    assert roots.results == (Path("~/suprem_data/results").expanduser()).resolve()
