"""Bad configs and bad data: exit 2 with one clear `error:` line before anything is written."""

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from .faults_harness import EVERY_STEP, STORAGE_ARGS, main_in_process, write_config


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, cifar10_path) -> dict[str, Path]:
    """Small sources with one defect each."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("bad_data")
    # The Hub layout of the local CIFAR-10 with 64 train rows and a 0-row test parquet.
    (root / "empty_parquet" / "plain_text").mkdir(parents=True)
    shutil.copy(cifar10_path / "README.md", root / "empty_parquet" / "README.md")
    source = pq.ParquetFile(cifar10_path / "plain_text" / "train-00000-of-00001.parquet")
    table = pa.Table.from_batches([next(source.iter_batches(batch_size=64))])
    table = table.replace_schema_metadata(source.schema_arrow.metadata)
    pq.write_table(table, root / "empty_parquet" / "plain_text" / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 0), root / "empty_parquet" / "plain_text" / "test-00000-of-00001.parquet")
    images = np.random.RandomState(0).randint(0, 256, (40, 32, 32, 3)).astype(np.uint8)
    values = [{"bytes": _png(a), "path": None} for a in images]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    labels = [i % 2 for i in range(40)]
    truncated = list(values)
    truncated[13] = {"bytes": values[13]["bytes"][:70], "path": None}  # cut off inside the image data
    garbage = list(values)
    garbage[21] = {"bytes": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "path": None}
    for name, train_values in (("truncated_png", truncated), ("garbage_png", garbage)):
        datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"image": train_values, "label": labels}, features=features),
            "test": datasets.Dataset.from_dict({"image": values[:8], "label": labels[:8]}, features=features),
        }).save_to_disk(str(root / name))
    int_features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    int_labels = [i % 2 for i in range(40)]
    int_labels[5] = 7
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": values, "label": int_labels}, features=int_features),
    }).save_to_disk(str(root / "int_labels"))
    # Parquet in the Hub layout, `label` a ClassLabel of 10 names, row 5 of one split holding label 12: datasets
    # reads it without a word (it does not enforce a ClassLabel's range on read).
    ten = datasets.ClassLabel(names=[f"c{i}" for i in range(10)])
    for bad_split in ("train", "test"):
        folder = root / f"classlabel_{bad_split}" / "data"
        for split in ("train", "test"):
            path = folder / f"{split}-00000-of-00001.parquet"
            datasets.Dataset.from_dict({"image": values[:24], "label": [i % 10 for i in range(24)]},
                                       features=datasets.Features({"image": datasets.Image(), "label": ten})
                                       ).to_parquet(str(path))
        table = pq.read_table(folder / f"{bad_split}-00000-of-00001.parquet")  # its schema says ClassLabel
        past_the_names = table.column("label").to_pylist()
        past_the_names[5] = 12
        table = table.set_column(table.schema.get_field_index("label"), table.schema.field("label"),
                                 pa.array(past_the_names, table.schema.field("label").type))
        pq.write_table(table, folder / f"{bad_split}-00000-of-00001.parquet")
    # The CIFAR-10 python version with an empty test batch (datasets itself cannot load an empty split).
    cifar = root / "empty_test" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    batch = {b"data": images.transpose(0, 3, 1, 2).reshape(40, -1), b"labels": labels}
    for i in range(1, 6):
        (cifar / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (cifar / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    (root / "bad.ini").write_text("[model\nembed_dim = 32\n")
    (root / "unknown.ini").write_text("[model]\nembed_dim = 32\nwidth = 3\n")
    (root / "bad.json").write_text('{"model": {"hidden_size": 32,}}')
    (root / "list.json").write_text('[1, 2]')
    return {"root": root, "truncated_png": root / "truncated_png", "garbage_png": root / "garbage_png",
            "empty_test": root / "empty_test"}


# (id, extra argv or a config-file name, expected message); "{data}" -> the bad_data root, "{out}" -> output_dir
BAD_INPUTS = [
    ("malformed JSON", "bad.json", "bad.json: malformed JSON at line 1, column 30: Expecting property name"),
    ("JSON not an object", "list.json", "list.json: expected a JSON object with sections dataset, model, training"),
    ("malformed INI", "bad.ini", "bad.ini: malformed INI: File contains no section headers."),
    ("unknown INI key", "unknown.ini", "unknown INI key [model] width"),
    ("unknown key", ["--model.hidden_sise", "32"], "unknown key model.hidden_sise; did you mean 'hidden_size'?"),
    ("unknown section", ["--trainer.seed", "1"], "override --trainer.seed: expected --SECTION.KEY with SECTION one of"
                                                 " dataset, model, training; did you mean 'training'?"),
    ("wrong type", ["--training.learning_rate", "fast"], "training.learning_rate='fast' is invalid: expected float"),
    ("wrong type int", ["--model.hidden_size", "32.5"], "model.hidden_size=32.5 is invalid: expected int"),
    ("wrong enum", ["--training.lr_scheduler_type", "cosin"], "training.lr_scheduler_type='cosin' is invalid: "
                                                                "expected one of linear, cosine"),
    ("out of range lr", ["--training.learning_rate", "-1"], "training.learning_rate=-1 is invalid: must be > 0"),
    ("out of range prob", ["--model.hidden_dropout_prob", "1.5"],
     "ViTScratchConfig.hidden_dropout_prob=1.5 is invalid: must be a probability in [0, 1)"),
    ("zero samples", ["--dataset.max_train_samples", "0"],
     "dataset.max_train_samples=0 is invalid: must be a positive integer or null"),
    ("inconsistent sizes", ["--model.hidden_size", "250", "--model.num_attention_heads", "4"],
     "ViTScratchConfig.hidden_size=250 is invalid: must be a multiple of num_attention_heads=4"),
    ("patch not dividing image", ["--model.patch_size", "5"],
     "ViTScratchConfig.image_size=32 is invalid: must be a multiple of patch_size=5"),
    ("token in config", ["--training.hub_token", "hf_x"], "training.hub_token is not allowed: a token never goes"),
    ("pickle weights", ["--training.save_safetensors", "false"],  # transformers 5 always saves safetensors
     "unknown key training.save_safetensors"),
    ("jit checkpoint", ["--training.enable_jit_checkpoint", "true"], "training.enable_jit_checkpoint is not allowed"),
    ("missing dataset path", ["--dataset.name", "{data}/no_such_folder"],
     "dataset.name={data}/no_such_folder: no such file or folder"),
    ("misnamed image column", ["--dataset.image_column", "foo"],
     "split 'train': no column 'foo' (dataset.image_column); columns: ['img', 'label']"),
    ("misnamed label column", ["--dataset.label_column", "fine_label"],
     "split 'train': no column 'fine_label' (dataset.label_column); columns: ['img', 'label']"),
    ("unknown split", ["--dataset.test_split", "validation"],
     "dataset.test_split='validation': '{cifar}' has no such split; splits: ['test', 'train']"),
    ("num_labels below the classes", ["--model.num_labels", "5"],
     "split 'train': model.num_labels=5, but the dataset has 10 classes (airplane, automobile, bird, cat, deer, dog, "
     "frog, horse, ship, truck); remove model.num_labels or set it to 10"),
    ("integer label outside num_labels", ["--dataset.name", "{data}/int_labels", "--dataset.validation_size", "4",
                                          "--dataset.test_split", "null", "--model.num_labels", "5"],
     "dataset '{data}/int_labels', split 'train', row 5: label 7 is outside [0, 5) (model.num_labels=5)"),
    ("ClassLabel label past the names in train", ["--dataset.name", "{data}/classlabel_train",
                                                  "--dataset.validation_size", "4"],
     "dataset '{data}/classlabel_train', split 'train', row 5: label 12 is outside [0, 10) (the dataset's 10 class "
     "names)"),
    ("ClassLabel label past the names in test", ["--dataset.name", "{data}/classlabel_test",
                                                 "--dataset.validation_size", "4"],
     "dataset '{data}/classlabel_test', split 'test', row 5: label 12 is outside [0, 10) (the dataset's 10 class "
     "names)"),
    ("empty split", ["--dataset.name", "{data}/empty_test", "--dataset.validation_size", "8"],
     "dataset '{data}/empty_test', split 'test': the split is empty"),
    ("empty parquet split", ["--dataset.name", "{data}/empty_parquet", "--dataset.validation_size", "8"],
     "dataset.name={data}/empty_parquet: a folder, but not a save_to_disk folder, CIFAR-10 archive, image folder or "
     "Hub-layout dataset: DatasetGenerationError: An error occurred while generating the dataset (caused by "
     "ArrowInvalid: BatchSize must be greater than 0, got 0)"),
    ("validation larger than train", ["--dataset.name", "{data}/empty_test", "--dataset.validation_size", "200",
                                      "--dataset.test_split", "null"],
     "dataset.validation_size=200 must be smaller than the 200 images of dataset '{data}/empty_test', split 'train'"),
    ("truncated PNG", ["--dataset.name", "{data}/truncated_png", "--dataset.validation_size", "4",
                       "--dataset.max_train_samples", "null"],
     "dataset '{data}/truncated_png', split 'train', row 13: cannot decode column 'image': OSError: image file is "
     "truncated"),
    ("truncated PNG, streamed", ["--dataset.name", "{data}/truncated_png", "--dataset.validation_size", "4",
                                 "--dataset.max_train_samples", "null", *STORAGE_ARGS["stream"]],
     "dataset '{data}/truncated_png', split 'train', row 13: cannot decode column 'image': OSError: image file is "
     "truncated"),  # met by the pass that measures mean/std, in a decode worker, before anything is written
    ("garbage PNG", ["--dataset.name", "{data}/garbage_png", "--dataset.validation_size", "4",
                     "--dataset.max_train_samples", "null"],
     "dataset '{data}/garbage_png', split 'train', row 21: cannot decode column 'image':"),
    ("no validation but eval", ["--dataset.validation_size", "0"],
     "dataset.validation_size=0 leaves nothing to evaluate on"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(case, bad_data, tmp_path, cifar10_path):
    _, given, expected = case
    root = bad_data["root"]
    config = write_config(tmp_path, cifar10_path, EVERY_STEP)
    if isinstance(given, str):
        config, extra = root / given, ["--dataset.name", str(cifar10_path)] if given.endswith(".json") else []
    else:
        extra = [a.replace("{data}", str(root)) for a in given]
    out = tmp_path / "out"
    status, err = main_in_process(["--config", str(config), "--training.output_dir", str(out), *extra])
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1, err[-3000:]
    print(f"\n{case[0]}: {errors[0]}")
    assert expected.format(data=root, cifar=cifar10_path) in errors[0]
    assert not out.exists()
