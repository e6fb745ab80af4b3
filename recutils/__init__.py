"""recutils: the tested code behind *Recommending with pretrained language models*."""

__version__ = "0.1.0"
