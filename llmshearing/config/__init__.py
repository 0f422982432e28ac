from llmshearing.config.load import load_config
from llmshearing.config.schema import TrainConfig

__all__ = ["TrainConfig", "load_config"]
