"""torch.jit.script refuses lstm_ext's API with a message that says what works instead: the API
dispatches in Python (PackedSequence, autograd.Function, reused tensors), which TorchScript cannot
compile. torch.jit.script calls __prepare_scriptable__ on every module and function it compiles,
a caller's scripted code that reaches lstm_ext included."""


def refuse_scripting(name):
    raise RuntimeError(
        f"{name} cannot be compiled by torch.jit.script: it dispatches in Python, which "
        "TorchScript does not support. Use torch.compile, or torch.export.export for a "
        "serialized graph (torch.jit.trace also records it, for one input rank)."
    )


def scripting_refused(name):
    """A __prepare_scriptable__ hook for the function `name`."""

    def prepare():
        refuse_scripting(name)

    return prepare
