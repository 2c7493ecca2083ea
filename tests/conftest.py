import os

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime for the whole test session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """A test on the shared vLLM engine (engine_fixtures) must be marked `vllm`, so that
    `-m "not vllm"` leaves out every test that starts one that way."""
    unmarked = [item.nodeid for item in items
                if "engine_config" in item.fixturenames and item.get_closest_marker("vllm") is None]
    if unmarked:
        raise pytest.UsageError(f"mark these tests @pytest.mark.vllm (they start vLLM): {', '.join(unmarked)}")
