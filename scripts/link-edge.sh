#!/usr/bin/env bash
# Put `edge` on the PATH for this user: DIR/edge -> TARGET (run by `make run`).
#   scripts/link-edge.sh TARGET DIR
# A link already there is replaced (it points at this or another checkout's venv); a file
# that is not a link is someone else's program and is left alone. Says how to reach `edge`
# when DIR is not on this shell's PATH.
set -euo pipefail
target=$1
dir=$2
link="$dir/edge"
mkdir -p "$dir"
if [ -e "$link" ] && [ ! -L "$link" ]; then
  echo "edge: $link exists and is not a link; left alone. Run $target, or remove $link" \
       "and run \`make link\`."
  exit 0
fi
if [ "$(readlink "$link" 2>/dev/null || true)" != "$target" ]; then
  ln -sfn "$target" "$link"
  echo "linked $link -> $target"
fi
case ":$PATH:" in
  *":$dir:"*)
    found=$(command -v edge || true)
    if [ -n "$found" ] && [ "$found" != "$link" ]; then
      echo "note: \`edge\` in this shell runs $found, which comes before $link on the PATH"
    fi
    ;;
  *)
    shown=$dir
    case "$dir" in "$HOME"/*) shown="\$HOME${dir#"$HOME"}" ;; esac
    # shellcheck disable=SC2016  # the line to type, with $HOME and $PATH left for the shell
    printf '%s\n' \
      "$dir is not on this shell's PATH yet (Debian's ~/.profile adds it at the next login)." \
      "To type \`edge\` now, run:" \
      "" \
      "    export PATH=\"$shown:\$PATH\"" \
      ""
    ;;
esac
