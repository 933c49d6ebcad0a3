import os

# The Triton kernels run on the CPU through the interpreter in tests; it must be switched on before any
# kernel module is imported. A GPU machine can opt out with TRITON_INTERPRET=0.
os.environ.setdefault("TRITON_INTERPRET", "1")
