from dbgfwd.rank import env as rankenv


def test_torchrun_wins_over_slurm():
    env = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
    assert rankenv.detect(env) == rankenv.RankEnv(5, 1, 8, "torchrun")


def test_each_source():
    cases = {
        "openmpi": {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
        "pmi": {"PMI_RANK": "3", "MPI_LOCALRANKID": "1"},
        "slurm": {"SLURM_PROCID": "3", "SLURM_LOCALID": "1"},
    }
    for name, env in cases.items():
        got = rankenv.detect(env)
        assert (got.rank, got.local_rank, got.source) == (3, 1, name)
    assert rankenv.detect({"JOB_COMPLETION_INDEX": "4"}) == rankenv.RankEnv(4, 0, None, "k8s-indexed-job")
    got = rankenv.detect({"AWS_BATCH_JOB_NODE_INDEX": "2", "AWS_BATCH_JOB_NUM_NODES": "3"})
    assert (got.rank, got.local_rank, got.world_size) == (2, 0, 3)


def test_garbage_and_missing_values():
    assert rankenv.detect({}) is None
    assert rankenv.detect({"RANK": "x"}) is None
    assert rankenv.detect({"RANK": "-1"}) is None
    assert rankenv.detect_or_default({}).source == "default"
