"""Shared pytest fixtures.

``scene``: a fresh MRML scene from the ``slicer-core`` wheel with the module logics that
``slicer.util`` helpers look up (GUIDE §6.2). Tests that use it need slicer-core installed
(the ``test`` extra pins it); without it they are skipped by ``importorskip``.
"""

import types

import pytest


@pytest.fixture
def scene():
    """An empty ``vtkMRMLScene`` set as ``slicer.mrmlScene``, with Colors, Volumes,
    Segmentations, Sequences and Tables logics registered in ``slicer.modules``."""
    slicer = pytest.importorskip("slicer")
    import slicer.util  # noqa: F401  (helpers look up slicer.mrmlScene / slicer.modules)

    mrml_scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = mrml_scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(mrml_scene)
    modules = {}
    for name, cls in [
        ("Colors", slicer.vtkMRMLColorLogic),  # procedural tables only
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Sequences", slicer.vtkSlicerSequencesLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
    ]:
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(mrml_scene)  # registers node classes / conversion rules
        app.SetModuleLogic(name, logic)  # lets the Volumes logic find the Colors logic
        modules[name.lower()] = types.SimpleNamespace(logic=lambda logic=logic: logic)
    slicer.modules = types.SimpleNamespace(**modules)  # what slicer.util expects
    yield mrml_scene
    mrml_scene.Clear(1)
