import pytest

from llmshearing.config import load_config
from llmshearing.errors import ConfigError, ShapeError
from llmshearing.model import LlamaConfig
from llmshearing.shape import TargetShape

YAMLS = ["yamls/prune_2.7b.yaml", "yamls/prune_1.3b.yaml", "yamls/prune_llama3.1_8b_to_4b.yaml",
         "yamls/prune_qwen3_8b_to_4b.yaml", "yamls/prune_gemma3_12b_to_4b.yaml",
         "yamls/demo_smollm2_prune.yaml", "yamls/tiny_prune.yaml"]


@pytest.mark.parametrize("path", YAMLS)
def test_shipped_yamls_load(path):
    cfg = load_config(path)
    assert cfg.pruning is not None and cfg.pruning.target


def test_paper_yamls_keep_paper_hyperparameters():
    cfg = load_config("yamls/prune_2.7b.yaml")
    assert cfg.max_duration == "3200ba" and cfg.global_train_batch_size == 32 and cfg.data.seq_len == 4096
    assert cfg.optimizer.lr == 1e-4 and cfg.pruning.mask_lr == 1.0 and cfg.pruning.lag_lr == 1.0
    assert cfg.pruning.target == dict(hidden_size=2560, num_attention_heads=20, num_key_value_heads=20,
                                      num_hidden_layers=32, intermediate_size=6912)
    small = load_config("yamls/prune_1.3b.yaml")
    assert small.pruning.target["num_hidden_layers"] == 24 and small.pruning.target["intermediate_size"] == 5504


def test_llama3_yaml_prunes_a_gqa_source_to_the_minitron_4b_width_shape():
    from llmshearing.shape import config_parameters

    llama31_8b = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=500000.0,
                             tie_word_embeddings=False)
    cfg = load_config("yamls/prune_llama3.1_8b_to_4b.yaml")
    target = TargetShape.from_mapping(cfg.pruning.target, llama31_8b)
    target.validate_against(llama31_8b)
    assert target.to_dict() == dict(hidden_size=3072, num_attention_heads=32, num_key_value_heads=8,
                                    num_hidden_layers=32, intermediate_size=9216)  # Llama-3.1-Minitron-4B-Width
    assert round(config_parameters(target.config_for(llama31_8b)) / 1e9, 2) == 4.51
    assert cfg.dynamic_loading.reference_losses_file and cfg.max_duration == "3200ba"


def test_qwen3_yaml_prunes_qwen3_8b_to_qwen3_4b_width():
    from llmshearing.shape import config_parameters

    qwen3_8b = LlamaConfig(model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                           num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                           rope_theta=1000000.0, tie_word_embeddings=False, qk_norm=True)
    assert round(config_parameters(qwen3_8b) / 1e9, 2) == 8.19  # Qwen3-8B's published 8.2B
    cfg = load_config("yamls/prune_qwen3_8b_to_4b.yaml")
    target = TargetShape.from_mapping(cfg.pruning.target, qwen3_8b)
    target.validate_against(qwen3_8b)
    assert target.to_dict() == dict(hidden_size=2560, num_attention_heads=32, num_key_value_heads=8,
                                    num_hidden_layers=36, intermediate_size=9728)  # Qwen3-4B's width
    pruned = target.config_for(qwen3_8b)
    assert (pruned.model_type, pruned.qk_norm, pruned.head_dim) == ("qwen3", True, 128)
    assert round(config_parameters(pruned) / 1e9, 2) == 4.41
    assert type(pruned.to_hf()).__name__ == "Qwen3Config"


def test_gemma3_yaml_prunes_gemma3_12b_text_to_the_4b_shape():
    from llmshearing.shape import config_parameters

    gemma3_12b = LlamaConfig(
        model_type="gemma3_text", vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
        num_attention_heads=16, num_key_value_heads=8, head_dim=256, rope_theta=1e6, tie_word_embeddings=True,
        rope_scaling={"rope_type": "linear", "factor": 8.0}, qk_norm=True, hidden_act="gelu_pytorch_tanh",
        norm_plus_one=True, scale_embeddings=True, sandwich_norms=True, query_pre_attn_scalar=256,
        rope_local_theta=10000.0, sliding_window=1024, max_position_embeddings=131072,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 8)
    assert round(config_parameters(gemma3_12b) / 1e9, 2) == 11.77  # Gemma-3-12B's text model
    cfg = load_config("yamls/prune_gemma3_12b_to_4b.yaml")
    target = TargetShape.from_mapping(cfg.pruning.target, gemma3_12b)
    target.validate_against(gemma3_12b)
    assert target.to_dict() == dict(hidden_size=2560, num_attention_heads=8, num_key_value_heads=4,
                                    num_hidden_layers=34, intermediate_size=10240)  # Gemma-3-4B's text shape
    pruned = target.config_for(gemma3_12b)
    assert round(config_parameters(pruned) / 1e9, 2) == 3.88  # Gemma-3-4B's text model
    assert (pruned.head_dim, pruned.query_pre_attn_scalar, pruned.sandwich_norms) == (256, 256, True)
    assert type(pruned.to_hf()).__name__ == "Gemma3TextConfig"


def test_dot_list_overrides_apply():
    cfg = load_config("yamls/prune_2.7b.yaml", ["max_duration=10ba", "save_folder=/tmp/x", "pruning.mask_lr=0.5"])
    assert (cfg.max_duration, cfg.save_folder, cfg.pruning.mask_lr) == ("10ba", "/tmp/x", 0.5)


@pytest.mark.parametrize("override, nearest", [
    ("max_durations=10ba", "max_duration"),
    ("pruning.mask_lrr=1", "pruning.mask_lr"),
    ("data.seqlen=12", "data.seq_len"),
])
def test_typo_in_key_names_nearest_valid_key(override, nearest):
    with pytest.raises(ConfigError, match=f"did you mean '{nearest}'"):
        load_config("yamls/tiny_prune.yaml", [override])


def test_wrong_value_type_is_a_config_error():
    with pytest.raises(ConfigError, match="global_train_batch_size|Integer"):
        load_config("yamls/tiny_prune.yaml", ["global_train_batch_size=lots"])


def test_missing_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


SOURCE = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=8, num_key_value_heads=4)


@pytest.mark.parametrize("target, message", [
    (dict(hidden_size=65), "larger than the source"),
    (dict(num_hidden_layers=5), "larger than the source"),
    (dict(num_attention_heads=6, num_key_value_heads=4), "not divisible"),
    (dict(num_attention_heads=6, num_key_value_heads=2), "query heads per KV head"),
    (dict(intermediate_size=0), "at least 1"),
    (dict(hiden_size=32), "unknown target shape keys"),
])
def test_impossible_targets_are_rejected(target, message):
    with pytest.raises(ShapeError, match=message):
        TargetShape.from_mapping(target, SOURCE).validate_against(SOURCE)


def test_unspecified_target_dimensions_keep_the_source_and_group_ratio():
    shape = TargetShape.from_mapping(dict(hidden_size=32, num_attention_heads=4), SOURCE)
    assert shape.num_key_value_heads == 2 and shape.num_hidden_layers == 4 and shape.intermediate_size == 128


@pytest.mark.parametrize("override, message", [
    ("dynamic_loading.mode=dynmic", "dynamic_loading.mode must be one of dynamic, static; got 'dynmic' "
                                    "(did you mean 'dynamic'?)"),
    ("dynamic_loading.loss_source=batches", "dynamic_loading.loss_source must be one of eval, train; got 'batches'"),
    ("precision=bf16", "precision must be one of fp32, amp_bf16, amp_fp16; got 'bf16' (did you mean 'amp_bf16'?)"),
    ("device=cuda", "device must be one of cpu, gpu, null; got 'cuda'"),
    ("scheduler.name=cosin", "scheduler.name must be one of constant, linear, cosine; got 'cosin' "
                             "(did you mean 'cosine'?)"),
    ("model.loss_kernel=triton", "model.loss_kernel must be one of torch, liger; got 'triton'"),
    ("data.train_split=eval", "data.train_split must be one of train, cpt; got 'eval'"),
    ("teacher.hidden_loss=l2", "teacher.hidden_loss must be one of cosine, mse; got 'l2'"),
    ("teacher.dtype=fp16", "teacher.dtype must be one of auto, float32, bfloat16; got 'fp16'"),
    ("python_log_level=verbose", "python_log_level must be one of debug, info, warning, error, critical"),
])
def test_a_choice_field_names_its_allowed_values_when_the_yaml_is_read(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config("yamls/demo_smollm2_prune.yaml", [override])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_an_optional_choice_field_takes_null():
    assert load_config("yamls/tiny_prune.yaml", ["device=null"]).device is None


def test_the_schema_lists_the_choices_the_code_implements():
    from llmshearing.composer.distillation import TEACHER_DTYPES
    from llmshearing.config import schema
    from llmshearing.model.loss_head import KERNELS
    from llmshearing.training import SCHEDULERS

    assert schema.LOSS_KERNELS == tuple(KERNELS)
    assert schema.TEACHER_DTYPES == tuple(TEACHER_DTYPES)
    assert schema.SCHEDULERS == tuple(SCHEDULERS)
