import pytest
import ray
import torch

from recutils.scale import encode_with_ray, start_local_ray
from recutils.text import TextEncoder

TEXTS = [f"listing {i}: a {'long ' * (i % 7)}summer dress in size {i % 5}" for i in range(40)]


def test_ray_needs_to_be_running_and_texts_to_encode():
    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(RuntimeError, match="Ray is not running"):
        encode_with_ray(TEXTS)


@pytest.fixture(scope="module")
def local_ray():
    start_local_ray(cpus=2)
    yield
    ray.shutdown()


def test_ray_workers_compute_the_single_process_vectors_in_order(local_ray):
    # Small batches: several blocks, finished by two actors in any order.
    vectors = encode_with_ray(TEXTS, workers=2, batch_size=8)
    reference = TextEncoder(use_cache=False).encode(TEXTS, progress=False)
    assert vectors.shape == reference.shape
    assert torch.allclose(vectors, reference, atol=1e-5)


def test_bad_arguments(local_ray):
    with pytest.raises(ValueError, match="no texts"):
        encode_with_ray([])
    with pytest.raises(ValueError, match="workers and batch_size must be positive"):
        encode_with_ray(TEXTS, workers=0)
