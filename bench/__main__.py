# llama.cpp's libraries load before anything imports numpy (the synthetic-model writer and
# the tests' GGUF generator do): on a CUDA machine, loading a model after numpy had been
# imported first segfaulted (docs/performance.md, "GPU settings").
try:
    import llama_cpp  # noqa: F401
except ImportError:  # the suite says what is missing where it needs it
    pass

from bench.run import main

main()
