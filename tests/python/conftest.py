def pytest_configure(config):
    config.addinivalue_line(
        "markers", "without_onnxruntime: runs before ONNX Runtime is installed (and after)")
