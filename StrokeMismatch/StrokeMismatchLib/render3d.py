"""3D picture of the ischemic core and penumbra inside the brain surface (VTK, offscreen).

Used by the HTML report. VTK is an optional dependency (extra ``report``); it is imported lazily,
and when VTK or an OpenGL context is not available :func:`render_lesion_3d` warns and returns
``None`` instead of failing the analysis.

Headless Linux: the VTK pip wheel (≥ 9.4) tries X, then EGL, then OSMesa. EGL needs the Debian
packages ``libegl1 libegl-mesa0 libgl1-mesa-dri`` (software rendering through Mesa llvmpipe);
OSMesa needs ``libosmesa6``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import InputDataError, OutputError
from .geometry import Geometry

BRAIN_COLOUR = (0.78, 0.78, 0.78)
CORE_COLOUR = (0.95, 0.05, 0.05)
PENUMBRA_COLOUR = (0.10, 0.75, 0.20)


def _import_vtk():
    """The VTK modules we use, or ``None`` when VTK is not installed."""
    if not sys.platform.startswith(("win", "darwin")) and not os.environ.get("DISPLAY"):
        # No X server: go straight to EGL instead of warning about the failed X connection.
        # (VTK still falls back to OSMesa when EGL is missing.)
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import vtkmodules.vtkCommonCore  # noqa: F401
        import vtkmodules.vtkCommonDataModel as data_model
        import vtkmodules.vtkCommonTransforms as transforms
        import vtkmodules.vtkFiltersCore as filters_core
        import vtkmodules.vtkFiltersGeneral as filters_general
        import vtkmodules.vtkImagingGeneral as imaging_general
        import vtkmodules.vtkIOImage as io_image
        import vtkmodules.vtkRenderingCore as rendering
        import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text actors)
        import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL back end)
        from vtkmodules.util import numpy_support
    except ImportError:
        return None
    return {
        "data_model": data_model,
        "transforms": transforms,
        "filters_core": filters_core,
        "filters_general": filters_general,
        "imaging_general": imaging_general,
        "io_image": io_image,
        "rendering": rendering,
        "numpy_support": numpy_support,
    }


def _make_render_window(vtk, size):
    """An offscreen render window, or ``None`` when no OpenGL context can be made."""
    window = vtk["rendering"].vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(int(size[0]), int(size[1]))
    if not window.SupportsOpenGL():
        return None
    return window


def _surface(vtk, mask_kji, geometry: Geometry, *, smooth_sigma=0.0, iterations=20, passband=0.05):
    """Smoothed closed surface (RAS mm) of a boolean ``[K, J, I]`` mask, or ``None`` if empty."""
    if not mask_kji.any():
        return None
    padded = np.pad(np.asarray(mask_kji, dtype=np.float32), 1)  # closes surfaces at the border
    image = vtk["data_model"].vtkImageData()
    k, j, i = padded.shape
    image.SetDimensions(i, j, k)  # VTK x (fastest) = i, matching C-order [k, j, i]
    image.SetOrigin(-1.0, -1.0, -1.0)  # index space: voxel (0, 0, 0) of the unpadded mask at 0
    image.SetSpacing(1.0, 1.0, 1.0)
    scalars = vtk["numpy_support"].numpy_to_vtk(padded.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    source = image
    port = None
    if smooth_sigma > 0:
        gauss = vtk["imaging_general"].vtkImageGaussianSmooth()
        gauss.SetInputData(image)
        gauss.SetStandardDeviations(smooth_sigma, smooth_sigma, smooth_sigma)
        gauss.SetRadiusFactors(2.0, 2.0, 2.0)
        port = gauss.GetOutputPort()
    contour = vtk["filters_core"].vtkFlyingEdges3D()
    if port is None:
        contour.SetInputData(source)
    else:
        contour.SetInputConnection(port)
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    smoother = vtk["filters_core"].vtkWindowedSincPolyDataFilter()
    smoother.SetInputConnection(contour.GetOutputPort())
    smoother.SetNumberOfIterations(iterations)
    smoother.SetPassBand(passband)
    smoother.BoundarySmoothingOff()
    smoother.NonManifoldSmoothingOn()
    smoother.NormalizeCoordinatesOn()
    transform = vtk["transforms"].vtkTransform()
    transform.SetMatrix([float(x) for x in geometry.ijk_to_ras.ravel()])
    to_ras = vtk["filters_general"].vtkTransformPolyDataFilter()
    to_ras.SetInputConnection(smoother.GetOutputPort())
    to_ras.SetTransform(transform)
    normals = vtk["filters_core"].vtkPolyDataNormals()
    normals.SetInputConnection(to_ras.GetOutputPort())
    normals.SplittingOff()
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()  # the padded surfaces are closed: normals point outwards
    normals.Update()
    output = normals.GetOutput()
    return output if output.GetNumberOfPoints() > 0 else None


def _actor(vtk, polydata, colour, opacity, specular=0.2):
    mapper = vtk["rendering"].vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    mapper.ScalarVisibilityOff()
    actor = vtk["rendering"].vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetColor(*colour)
    prop.SetOpacity(opacity)
    prop.SetSpecular(specular)
    prop.SetSpecularPower(20)
    return actor


def _text(vtk, text, position, colour, size=15, justify_right=False):
    actor = vtk["rendering"].vtkTextActor()
    actor.SetInput(text)
    prop = actor.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetColor(*colour)
    prop.SetFontFamilyToArial()
    if justify_right:
        prop.SetJustificationToRight()
    actor.SetDisplayPosition(int(position[0]), int(position[1]))
    return actor


def _centroid_ras(mask, geometry):
    ijk = np.argwhere(mask)[:, ::-1].astype(float)  # (k, j, i) -> (i, j, k)
    return geometry.ijk_to_ras_points(ijk.mean(axis=0))


def render_lesion_3d(brain_mask, core, penumbra, geometry: Geometry, path_png, size=(600, 500),
                     *, background="white", title=None) -> Path | None:
    """Render core (red) and penumbra (green) inside the translucent brain surface to a PNG.

    ``brain_mask``, ``core``, ``penumbra``: boolean ``[K, J, I]`` on ``geometry``'s grid. The
    camera looks from the side of the lesion (patient's left or right, slightly from above and
    in front), superior up. ``background`` "white" or "black". Returns the PNG path, or ``None``
    (with a ``RuntimeWarning``) when VTK or an OpenGL context is not available.
    """
    shape = tuple(geometry.shape)
    arrays = {}
    for name, array in (("brain_mask", brain_mask), ("core", core), ("penumbra", penumbra)):
        array = np.asarray(array) if array is not None else np.zeros(shape, bool)
        if array.shape != shape:
            raise InputDataError(
                f"The {name} for the 3D picture has shape {array.shape}, but the grid is {shape}: "
                "pass masks on the perfusion grid."
            )
        arrays[name] = array.astype(bool)
    if not arrays["brain_mask"].any():
        raise InputDataError("The brain mask is empty: there is no brain surface to render.")
    if background not in ("white", "black"):
        raise InputDataError(f"Unknown background {background!r}: use 'white' or 'black'.")
    path_png = Path(path_png)
    if not path_png.parent.is_dir():
        raise OutputError(f"Folder {path_png.parent} does not exist: create it before rendering.")

    vtk = _import_vtk()
    if vtk is None:
        warnings.warn("VTK is not installed: no 3D picture (pip install vtk).", RuntimeWarning,
                      stacklevel=2)
        return None
    try:
        window = _make_render_window(vtk, size)
    except Exception as error:  # any failure to create a GL context: no picture, no crash
        window = None
        reason = str(error)
    else:
        reason = "no OpenGL context"
    if window is None:
        warnings.warn(
            f"Cannot render the 3D picture offscreen ({reason}). On headless Linux install EGL "
            "(Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa (libosmesa6).",
            RuntimeWarning, stacklevel=2)
        return None

    foreground = (0.0, 0.0, 0.0) if background == "white" else (1.0, 1.0, 1.0)
    renderer = vtk["rendering"].vtkRenderer()
    renderer.SetBackground(*((1.0, 1.0, 1.0) if background == "white" else (0.0, 0.0, 0.0)))
    renderer.SetUseDepthPeeling(1)
    renderer.SetMaximumNumberOfPeels(8)
    renderer.SetOcclusionRatio(0.05)
    window.SetAlphaBitPlanes(1)
    window.SetMultiSamples(0)
    window.AddRenderer(renderer)

    brain = _surface(vtk, arrays["brain_mask"], geometry, smooth_sigma=1.0, iterations=15)
    core_surface = _surface(vtk, arrays["core"], geometry, smooth_sigma=0.6)
    penumbra_surface = _surface(vtk, arrays["penumbra"], geometry, smooth_sigma=0.6)
    if brain is not None:
        renderer.AddActor(_actor(vtk, brain, BRAIN_COLOUR, 0.12, specular=0.05))
    if penumbra_surface is not None:
        renderer.AddActor(_actor(vtk, penumbra_surface, PENUMBRA_COLOUR, 0.25))
    if core_surface is not None:
        core_actor = _actor(vtk, core_surface, CORE_COLOUR, 1.0)
        core_actor.GetProperty().SetAmbient(0.35)  # stays clearly red behind the green veil
        renderer.AddActor(core_actor)

    # Camera: from the lesion's side (RAS x sign of the lesion centroid relative to the brain's),
    # 30° above and 20° in front of the lateral direction; superior up.
    brain_centre = _centroid_ras(arrays["brain_mask"], geometry)
    lesion = arrays["core"] | arrays["penumbra"]
    side = 1.0
    if lesion.any():
        side = 1.0 if _centroid_ras(lesion, geometry)[0] >= brain_centre[0] else -1.0
    direction = np.array([side * np.cos(np.radians(30)), np.sin(np.radians(20)), np.sin(np.radians(30))])
    direction /= np.linalg.norm(direction)
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*brain_centre)
    camera.SetPosition(*(brain_centre + 500.0 * direction))
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.25)
    renderer.ResetCameraClippingRange()

    side_word = "right" if side > 0 else "left"
    width, height = int(size[0]), int(size[1])
    renderer.AddViewProp(_text(vtk, title or f"Seen from the patient's {side_word} (superior up)",
                              (10, height - 26), foreground, size=15))
    renderer.AddViewProp(_text(vtk, "core", (10, 10), CORE_COLOUR, size=17))
    renderer.AddViewProp(_text(vtk, "penumbra", (70, 10), PENUMBRA_COLOUR, size=17))
    renderer.AddViewProp(_text(vtk, "brain surface", (180, 10), (0.5, 0.5, 0.5), size=17))
    renderer.AddViewProp(_text(vtk, "A" if side > 0 else "P", (width - 10, height // 2),
                              foreground, size=18, justify_right=True))
    renderer.AddViewProp(_text(vtk, "P" if side > 0 else "A", (10, height // 2), foreground, size=18))

    try:
        window.Render()
        grabber = vtk["rendering"].vtkWindowToImageFilter()
        grabber.SetInput(window)
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        writer = vtk["io_image"].vtkPNGWriter()
        writer.SetFileName(str(path_png))
        writer.SetInputConnection(grabber.GetOutputPort())
        writer.Write()
    finally:
        window.Finalize()
    if not path_png.is_file():
        raise OutputError(f"Could not write the 3D picture to {path_png}: check the folder is writable.")
    return path_png
