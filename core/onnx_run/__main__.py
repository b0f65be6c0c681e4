"""``python -m onnx_run`` (also what torchrun launches)."""

from onnx_run.cli import main

if __name__ == "__main__":
    main()
