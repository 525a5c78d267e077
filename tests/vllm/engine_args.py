"""Engine settings shared by the vLLM tests and benchmarks: small, eager, fp32, exact on a 2-core CPU."""

ENGINE_ARGS = {
    "dtype": "float32",  # parity with the transformers implementation in fp32
    "enforce_eager": True,  # no compile time; the parity test's "compiled" case and the app tests compile
    "gpu_memory_utilization": 0.2,  # vLLM's CPU backend refuses its default share on a 24 GiB machine
    "max_num_seqs": 16,
    "block_size": 32,  # the CPU default (128) leaves short prompts without a single full block to reuse
}
