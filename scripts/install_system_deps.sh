#!/usr/bin/env bash
# Install the system packages the PACS tests need (Debian / Ubuntu):
#   orthanc            - the Orthanc DICOM server (binary: Orthanc)
#   orthanc-dicomweb   - its DICOMweb plugin (QIDO-RS / WADO-RS / STOW-RS)
#   dicom3tools        - dciodvfy, the DICOM IOD validator used on every SEG / Parametric Map
#
# Idempotent (does nothing when everything is installed), non-interactive, runs as root without
# sudo and through sudo otherwise. The Debian orthanc package starts a system service when an init
# system is running; the tests start their own Orthanc on a loopback port, so this script stops and
# disables that service again where systemd/service is available (harmless when it is not).
#
# Usage: bash scripts/install_system_deps.sh        (exit code 0 on success)
set -euo pipefail

PACKAGES=(orthanc orthanc-dicomweb dicom3tools)

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install_system_deps.sh: not root and sudo is not available; cannot install ${PACKAGES[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps.sh: apt-get not found; install ${PACKAGES[*]} with your package manager" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_system_deps.sh: already installed: ${PACKAGES[*]}"
else
    echo "install_system_deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d 101 keeps the package's postinst from starting the system Orthanc service in
    # containers without an init system; restored afterwards.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod +x "$policy"
        created_policy=1
    fi
    cleanup() { if [ "$created_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
    trap cleanup EXIT
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    # a system service started anyway (e.g. on a CI VM with systemd) is not needed by the tests
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now orthanc >/dev/null 2>&1 || true
    fi
fi

# report what the tests will use
for tool in Orthanc dciodvfy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install_system_deps.sh: $tool not on PATH after installation" >&2
        exit 1
    fi
done
plugin=$(dpkg -L orthanc-dicomweb | grep -E 'libOrthancDicomWeb\.so' | head -n 1 || true)
if [ -z "$plugin" ]; then
    echo "install_system_deps.sh: the DICOMweb plugin library was not found in package orthanc-dicomweb" >&2
    exit 1
fi
echo "install_system_deps.sh: Orthanc=$(command -v Orthanc) dciodvfy=$(command -v dciodvfy) dicomweb plugin=$plugin"
