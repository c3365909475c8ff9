#!/usr/bin/env bash
# One-time set-up so that `snakemake --profile slurm` finds this repository's profile.
#
# Snakemake 9 looks a profile NAME up in the working directory, then in
# $XDG_CONFIG_HOME/snakemake (default ~/.config/snakemake), then /etc/xdg/snakemake;
# it never searches profiles/. This links profiles/slurm there, so later edits to
# profiles/slurm/ (your account, partitions) take effect without re-running it.
#
#   tools/install_slurm_profile.sh               link as `slurm`
#   tools/install_slurm_profile.sh --name fr-slurm   another name, e.g. when you already
#                                                 have a `slurm` profile for other work
#   tools/install_slurm_profile.sh --uninstall   remove the link (only if it is ours)
# `snakemake --profile profiles/slurm` (a path) works without any of this.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SRC="$(cd "$REPO/profiles/slurm" && pwd -P)"
NAME=slurm
UNINSTALL=""
while (( $# )); do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --name=*) NAME="${1#--name=}"; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || { echo "invalid profile name: $NAME" >&2; exit 2; }
[[ -f "$SRC/config.yaml" ]] || { echo "missing $SRC/config.yaml" >&2; exit 1; }

DEST_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake"
DEST="$DEST_DIR/$NAME"

points_here() { [[ -L "$DEST" && "$(cd "$DEST" 2>/dev/null && pwd -P)" == "$SRC" ]]; }

if [[ -n "$UNINSTALL" ]]; then
  if points_here; then rm "$DEST"; echo "removed $DEST"
  elif [[ -e "$DEST" || -L "$DEST" ]]; then echo "$DEST is not a link to $SRC; left alone" >&2; exit 1
  else echo "nothing to remove at $DEST"; fi
  exit 0
fi

if points_here; then
  echo "profile '$NAME' already links to $SRC"
elif [[ -e "$DEST" || -L "$DEST" ]]; then
  echo "$DEST already exists and is not this repository's profile; left alone." >&2
  echo "Use another name (--name fr-slurm, then: snakemake --profile fr-slurm)," >&2
  echo "or move $DEST away and run this again." >&2
  exit 1
else
  mkdir -p "$DEST_DIR"
  ln -s "$SRC" "$DEST"
  echo "linked $DEST -> $SRC"
fi
account="$(sed -n 's/^ *slurm_account: *"\{0,1\}\([^"#]*\)"\{0,1\}.*/\1/p' "$SRC/config.yaml" | head -1 | tr -d ' ')"
echo "Profile '$NAME' is ready: snakemake --profile $NAME"
echo "Check the site values first (docs/slurm.md): account '$account' in $SRC/config.yaml,"
echo "partition names in $SRC/partitions.yaml."
