"""Trains the example's model and packages it for the worker (TF.js) and for its test.

The model: a small real classifier, a two-layer MLP (64-32-10) trained with PyTorch on
scikit-learn's handwritten digits (the UCI "Optical Recognition of Handwritten Digits" set: 1,797
8x8 images with pixel values 0..16, shipped inside scikit-learn, so nothing is downloaded).

Run from this folder (Python 3.10+; every package installs from PyPI):

    pip install torch scikit-learn onnx onnxruntime onnxscript
    python train.py

Writes:
  digits-mlp.json         TF.js layers model topology ("format": "layers-model", as
                          tensorflowjs_converter writes it for a Keras Sequential model)
  digits-mlp.weights.bin  its weights: float32 little-endian, in the manifest's order. The `.bin`
                          extension makes wrangler (and `borde deploy`) attach it as a Data module,
                          an ArrayBuffer, with no [[rules]] in wrangler.toml
  digits-mlp.onnx         the same trained model exported to ONNX: the reference the expected
                          outputs come from, and the file to use with onnxruntime-web instead
  expected.json           held-out digits with their labels and the probabilities ONNX Runtime
                          (CPU, Python) computes for them; the worker's test compares against it
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = pathlib.Path(__file__).resolve().parent
SEED = 0
HIDDEN = 32
EPOCHS = 300
CASES = 32

torch.manual_seed(SEED)
np.random.seed(SEED)

digits = load_digits()
x = digits.data.astype(np.float32)  # [1797, 64], 0..16
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


class DigitsMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, HIDDEN)
        self.fc2 = torch.nn.Linear(HIDDEN, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Scaling is part of the model: callers send raw 0..16 pixel values.
        return torch.softmax(self.fc2(torch.relu(self.fc1(pixels / 16.0))), dim=-1)


model = DigitsMLP()
opt = torch.optim.Adam(model.parameters(), lr=0.01)
xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
for _ in range(EPOCHS):
    opt.zero_grad()
    loss = torch.nn.functional.nll_loss(torch.log(model(xt) + 1e-12), yt)
    loss.backward()
    opt.step()
model.eval()

with torch.no_grad():
    torch_probs = model(torch.from_numpy(x_test)).numpy()
print(f"PyTorch: test accuracy {float((torch_probs.argmax(-1) == y_test).mean()):.4f} on {len(y_test)} held-out digits")

# --- ONNX: the interchange format, and the reference runtime ----------------------------------
onnx_file = HERE / "digits-mlp.onnx"
torch.onnx.export(
    model,
    (torch.zeros(1, 64),),
    str(onnx_file),
    input_names=["pixels"],
    output_names=["probabilities"],
    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
    opset_version=18,
    external_data=False,
)
onnx.checker.check_model(onnx.load(str(onnx_file)))
sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
(ort_probs,) = sess.run(None, {"pixels": x_test})
ort_acc = float((ort_probs.argmax(-1) == y_test).mean())
assert np.allclose(ort_probs, torch_probs, atol=1e-6), "ONNX Runtime disagrees with PyTorch"
print(f"wrote {onnx_file.name}: {onnx_file.stat().st_size} bytes; ONNX Runtime test accuracy {ort_acc:.4f}")

# --- TF.js layers model: what the worker loads ------------------------------------------------
# Keras' Dense keeps its kernel as [in, out]; torch.nn.Linear keeps [out, in].
state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
weights = [
    ("fc1/kernel", state["fc1.weight"].T),
    ("fc1/bias", state["fc1.bias"]),
    ("fc2/kernel", state["fc2.weight"].T),
    ("fc2/bias", state["fc2.bias"]),
]
weights_file = HERE / "digits-mlp.weights.bin"
weights_file.write_bytes(b"".join(np.ascontiguousarray(w, dtype="<f4").tobytes() for _, w in weights))
topology = {
    "format": "layers-model",
    "generatedBy": f"examples/wasm-model-worker/model/train.py (PyTorch {torch.__version__.split('+')[0]})",
    "convertedBy": None,
    "modelTopology": {
        "keras_version": "2.15.0",
        "backend": "tensorflow",
        "model_config": {
            "class_name": "Sequential",
            "config": {
                "name": "digits_mlp",
                "layers": [
                    {"class_name": "InputLayer", "config": {"name": "pixels", "batch_input_shape": [None, 64], "dtype": "float32", "sparse": False}},
                    {"class_name": "Rescaling", "config": {"name": "rescale", "scale": 1.0 / 16.0, "offset": 0.0, "dtype": "float32", "trainable": False}},
                    {"class_name": "Dense", "config": {"name": "fc1", "units": HIDDEN, "activation": "relu", "use_bias": True, "dtype": "float32", "trainable": True}},
                    {"class_name": "Dense", "config": {"name": "fc2", "units": 10, "activation": "softmax", "use_bias": True, "dtype": "float32", "trainable": True}},
                ],
            },
        },
    },
    "weightsManifest": [
        {
            "paths": [weights_file.name],
            "weights": [{"name": name, "shape": list(w.shape), "dtype": "float32"} for name, w in weights],
        }
    ],
}
(HERE / "digits-mlp.json").write_text(json.dumps(topology, indent=1) + "\n")

# The same forward pass in numpy from the packaged weights: catches a transposed kernel here
# rather than in the worker.
w = {name: a for name, a in weights}
h = np.maximum(x_test / 16.0 @ w["fc1/kernel"] + w["fc1/bias"], 0)
z = h @ w["fc2/kernel"] + w["fc2/bias"]
np_probs = np.exp(z - z.max(-1, keepdims=True))
np_probs /= np_probs.sum(-1, keepdims=True)
assert np.allclose(np_probs, ort_probs, atol=1e-5), "the packaged TF.js weights disagree with ONNX Runtime"
print(f"wrote digits-mlp.json + {weights_file.name}: {weights_file.stat().st_size} bytes")

# --- The reference outputs ----------------------------------------------------------------------
expected = {
    "model": "digits-mlp",
    "reference": f"onnxruntime {ort.__version__} CPUExecutionProvider on {onnx_file.name}",
    "test_accuracy": round(ort_acc, 6),
    "test_size": int(len(y_test)),
    "cases": [
        {
            "pixels": [int(v) for v in x_test[i]],
            "label": int(y_test[i]),
            "predicted": int(ort_probs[i].argmax()),
            "probabilities": [round(float(v), 7) for v in ort_probs[i]],
        }
        for i in range(CASES)
    ],
}
(HERE / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
right = sum(c["label"] == c["predicted"] for c in expected["cases"])
print(f"wrote expected.json: {CASES} cases, {right} predicted right")
