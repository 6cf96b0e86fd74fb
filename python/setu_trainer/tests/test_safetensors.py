import os
import struct
import unittest

from helpers import temp_dir
from setu_trainer import SafetensorsError, Tensor, read_safetensors, write_safetensors

# The same bit patterns Setu's own codec is tested against (numpy's float16 cast, torch's bfloat16 cast).
ROUNDING = [
    (0.1, 0x2E66, 0x3DCD), (1 / 3, 0x3555, 0x3EAB), (-2.5e-6, 0x802A, 0xB628), (65519.0, 0x7BFF, 0x4780),
    (1e-8, 0x0000, 0x322C), (3.0000002, 0x4200, 0x4040), (5.9604645e-8, 0x0001, 0x3380), (2.9802322e-8, 0x0000, 0x3300),
    (8.940697e-8, 0x0002, 0x33C0), (1.01171875, 0x3C0C, 0x3F82),
]


class SafetensorsTest(unittest.TestCase):
    def test_every_dtype_round_trips(self):
        values = {"F64": [2.25, -1.0], "F32": [0.5, -3.0], "F16": [0.5, -65504.0], "BF16": [1.5, -2.0], "I64": [-(2**40), 7],
                  "I32": [-7, 123456], "I16": [-32768, 32767], "I8": [-128, 127], "U8": [0, 255], "BOOL": [True, False]}
        tensors = {d.lower(): Tensor.from_list(d, (2,), v) for d, v in values.items()}
        path = os.path.join(temp_dir(), "t.safetensors")
        write_safetensors(path, tensors, {"who": "test"})
        back, meta = read_safetensors(path)
        self.assertEqual(meta, {"who": "test"})
        self.assertEqual(sorted(back), sorted(tensors))
        for d, v in values.items():
            self.assertEqual(back[d.lower()].dtype, d)
            self.assertEqual(back[d.lower()].tolist(), v, d)
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        self.assertEqual((8 + n) % 8, 0, "the byte buffer starts 8-aligned")

    def test_f16_and_bf16_round_to_nearest_even_like_numpy_and_torch(self):
        for v, f16, bf16 in ROUNDING:
            self.assertEqual(struct.unpack("<H", Tensor.from_list("F16", (1,), [v]).data)[0], f16, f"f16({v})")
            self.assertEqual(struct.unpack("<H", Tensor.from_list("BF16", (1,), [v]).data)[0], bf16, f"bf16({v})")

    def test_names_that_are_python_or_javascript_keywords_are_ordinary(self):
        names = ["__proto__", "constructor", "toString", "class", "layers.0.weight"]
        path = os.path.join(temp_dir(), "t.safetensors")
        write_safetensors(path, {k: Tensor.from_list("F32", (1,), [i]) for i, k in enumerate(names)})
        back, _ = read_safetensors(path)
        self.assertEqual({k: t.tolist() for k, t in back.items()}, {k: [float(i)] for i, k in enumerate(names)})

    def test_malformed_files_are_refused_with_the_reason(self):
        with self.assertRaisesRegex(SafetensorsError, "too short"):
            read_safetensors(b"\x01\x02")
        header = b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
        good = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1, 2)
        self.assertEqual(read_safetensors(good)[0]["t"].tolist(), [1.0, 2.0])
        with self.assertRaisesRegex(SafetensorsError, "belong to no tensor"):
            read_safetensors(good + b"\x00")
        with self.assertRaisesRegex(SafetensorsError, "needs 12 bytes"):
            bad = header.replace(b"[2]", b"[3]")
            read_safetensors(struct.pack("<Q", len(bad)) + bad + struct.pack("<2f", 1, 2))
        with self.assertRaisesRegex(SafetensorsError, "unsupported dtype 'Q4'"):
            bad = header.replace(b"F32", b"Q4")
            read_safetensors(struct.pack("<Q", len(bad)) + bad + struct.pack("<2f", 1, 2))
        with self.assertRaisesRegex(SafetensorsError, "not an integer"):
            Tensor.from_list("I64", (1,), [1.5])


if __name__ == "__main__":
    unittest.main()
