#!/usr/bin/env bash
# System packages the test suite uses beside the Python ones (Debian/Ubuntu, as root or with sudo):
#   chromium                              print the report to PDF (page-1 test)
#   libegl1 libegl-mesa0 libgl1-mesa-dri  offscreen rendering of Slicer's views (slicer-core, EGL)
#   orthanc                               a real PACS for the DICOM send/listen tests (the tests start
#                                         their own Orthanc on free ports; no system service is used)
#   dicom3tools                           dciodvfy, validates every DICOM object we write
# Installs only what is missing, so it is quick on a prepared machine.
set -euo pipefail
packages=(chromium libegl1 libegl-mesa0 libgl1-mesa-dri orthanc dicom3tools)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "Installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
