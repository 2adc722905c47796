"""A model outside the built-in catalogue: accepted, counted when its size is given, warned about when not."""

import copy

from components.config.schema import ConfigError, load_stack_config
from harness import stack_config

UNRAID = stack_config("unraid")


def with_model(model: str, entry: dict | None = None) -> dict:
    raw = copy.deepcopy(UNRAID)
    raw["inference"]["ollama"]["models"].append(model)
    if entry is not None:
        raw["modelCatalog"] = {model: entry}
    return raw


def test_an_unknown_model_is_accepted_with_a_warning_naming_the_key():
    cfg, warnings = load_stack_config(with_model("phi3:mini"))
    assert "phi3:mini" in cfg.inference["ollama"].models
    ours = [w for w in warnings if "phi3:mini" in w]
    assert len(ours) == 1
    assert ours[0].startswith("inference.ollama.models: phi3:mini is not in the catalogue")
    assert "modelCatalog.phi3:mini" in ours[0] and "sizeGb" in ours[0] and "vramGb" in ours[0]


def test_a_sized_model_counts_in_the_disk_and_vram_budgets():
    from components.config.inventory import preflight_spec

    def disk_kib(c):
        return dict(preflight_spec(c, "unraid", "unraid").disk)
    base = disk_kib(load_stack_config(UNRAID)[0])
    cfg, warnings = load_stack_config(with_model("phi3:mini", {"sizeGb": 2.2, "vramGb": 30}))
    assert not [w for w in warnings if "not in the catalogue" in w]
    node = cfg.inference["ollama"]
    assert node.model_info("phi3:mini").size_gb == 2.2
    # 30 GB on a 24 GB P40: the same spill-to-CPU warning a catalogue model gets
    assert any(w.startswith("inference.ollama.models: phi3:mini needs about 30 GB of VRAM") for w in warnings)
    # the preflight asks the store for 2.2 GB more free space
    (path, before), = base.items()
    assert disk_kib(cfg)[path] - before == round(2.2 * 1024 * 1024)


def test_the_program_pulls_a_model_outside_the_catalogue(run):
    r = run("unraid", config=with_model("phi3:mini", {"sizeGb": 2.2, "vramGb": 3.5}))
    assert r.error is None, r.error
    pull = r.by_name("ollama-pull-models").inputs
    assert "phi3:mini" in pull["triggers"] and "phi3:mini" in pull["create"]


def test_a_model_described_for_another_engine_is_refused():
    raw = with_model("my-org/finetune", {"engine": "hf", "sizeGb": 14, "vramGb": 16})
    try:
        load_stack_config(raw)
    except ConfigError as exc:
        text = exc.render()
        assert "inference.ollama.models[" in text and "hf model" in text
    else:
        raise AssertionError("an hf model on an Ollama node was accepted")


def test_a_catalogue_entry_needs_both_sizes():
    raw = with_model("phi3:mini", {"sizeGb": 2.2})
    try:
        load_stack_config(raw)
    except ConfigError as exc:
        assert "modelCatalog.phi3:mini.vramGb" in exc.render()
    else:
        raise AssertionError("a catalogue entry without vramGb was accepted")
