"""Fixtures for the tests that run the real StrokeMismatch.py on slicer-core (see slicerapp.py).

``app``: a fresh ``slicer.app`` stand-in with a new MRML scene, the real module logics and
offscreen views; ``module``: the imported ``StrokeMismatch`` module (the real file);
``mr_run``: the MR sample, loaded by clicking its Sample Data button (built locally, no
network), through ``StrokeMismatchLogic.process`` and ``showResults``.
"""

import pytest

import slicerapp


@pytest.fixture
def app():
    application = slicerapp.install()
    yield application
    application.close()


@pytest.fixture
def module(app):
    import StrokeMismatch

    return StrokeMismatch


def load_sample(app, module, modality="mr"):
    """What a user does: start-up registers the samples, then one click on the button."""
    from StrokeMismatchLib.samplecase import SAMPLE_NAMES

    module.StrokeMismatch(slicerapp.types.SimpleNamespace())  # the module object registers at start-up
    module._sampleDataRegistered = False
    app.emit("startupCompleted()")
    return app.clickSampleDataButton(SAMPLE_NAMES[modality])


@pytest.fixture
def mr_run(app, module):
    """The MR sample through ``StrokeMismatchLogic.process`` and ``showResults``: (logic, nodes, outputs)."""
    nodes = load_sample(app, module, "mr")
    logic = module.StrokeMismatchLogic()
    outputs = logic.process(nodes["sequence"], nodes["adc"], motionCorrection=False)
    logic.showResults(outputs)
    return logic, nodes, outputs
