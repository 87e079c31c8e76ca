"""ggml's own quantizer on rows given as raw f32, with or without an importance matrix, through
the libggml-base that llama-cpp-python builds from the llama.cpp it vendors (the quantizers
llama-quantize calls). Prints NO_LLAMA_CPP when llama-cpp-python is not installed.

Usage: ggml_quantize.py TYPE_ID N_PER_ROW VALUES.f32 IMPORTANCE.f32|- OUT.bin
"""
import ctypes
import glob
import os
import sys

try:
    import llama_cpp
except ImportError:
    print("NO_LLAMA_CPP")
    sys.exit(0)

lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
candidates = glob.glob(os.path.join(lib_dir, "libggml-base.*"))
if not candidates:
    sys.exit(f"no libggml-base in {lib_dir}")
ggml = ctypes.CDLL(candidates[0])
ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
ggml.ggml_quantize_chunk.argtypes = [
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
    ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
]
ggml.ggml_row_size.restype = ctypes.c_size_t
ggml.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

kind, n_per_row = int(sys.argv[1]), int(sys.argv[2])
values = open(sys.argv[3], "rb").read()
rows = len(values) // 4 // n_per_row
src = ctypes.create_string_buffer(values, len(values))
imatrix = None
if sys.argv[4] != "-":
    weights = open(sys.argv[4], "rb").read()
    imatrix = ctypes.create_string_buffer(weights, len(weights))
size = ggml.ggml_row_size(kind, n_per_row) * rows
dst = ctypes.create_string_buffer(size)
written = ggml.ggml_quantize_chunk(kind, src, dst, 0, rows, n_per_row, imatrix)
assert written == size, (written, size)
open(sys.argv[5], "wb").write(dst.raw)
print("OK")
