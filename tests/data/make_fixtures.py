"""Makes the small ONNX files that tests/network.rs loads to check the model contract.

    python tests/data/make_fixtures.py   (needs the `onnx` package)

- no-metadata.onnx: right inputs and outputs, but no espinnet metadata (not our export).
- wrong-nnet.onnx: metadata says Nnet 20, inputs take 7 channels.
Both graphs are trivial (outputs sliced from the inputs); only their interfaces matter.
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).parent


def graph(channels):
    dims = lambda c: ["batch", c, "height", "width"]  # noqa: E731
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims(channels))
              for n in ("reference", "sample")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims(c))
               for n, c in (("displacement", 2), ("transmission", 1), ("darkfield", 1))]
    const = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [1], [v]))
    nodes = [const("axis", 1), const("c0", 0), const("c1", 1), const("c2", 2),
             helper.make_node("Slice", ["reference", "c0", "c2", "axis"], ["displacement"]),
             helper.make_node("Slice", ["sample", "c0", "c1", "axis"], ["transmission"]),
             helper.make_node("Slice", ["sample", "c1", "c2", "axis"], ["darkfield"])]
    return helper.make_graph(nodes, "fixture", inputs, outputs)


def save(name, channels, meta):
    m = helper.make_model(graph(channels), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, HERE / name)


META = {"espinnet.nnet": "20", "espinnet.size_multiple": "16",
        "espinnet.normalisation": "mean_of_reference_stack"}
save("no-metadata.onnx", 20, {})
save("wrong-nnet.onnx", 7, META)
