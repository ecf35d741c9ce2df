#!/bin/sh
# Install the AI Service Platform bundle for the current user on Linux, or remove it.
#
#   packaging/linux/install.sh [BUNDLE]   install or upgrade (BUNDLE defaults to dist/ai-service-platform)
#   packaging/linux/install.sh --uninstall
#
# The program goes to ~/.local/opt/ai-service-platform, a launcher to ~/.local/bin, the menu entry and icons
# to ~/.local/share (or $XDG_DATA_HOME). Your data (keys, usage, settings) lives apart, in
# $XDG_DATA_HOME/ai-service-platform (~/.local/share/ai-service-platform): installing, upgrading and
# uninstalling never touch it.
set -eu

NAME=ai-service-platform
HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
PREFIX=$HOME/.local/opt/$NAME
BIN=$HOME/.local/bin
DESKTOP=$DATA_HOME/applications/$NAME.desktop
ICONS=$DATA_HOME/icons/hicolor
SIZES="16 24 32 48 64 128 256 512"

say() { printf '%s\n' "$*"; }
fail() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

refresh_menus() {
    # Optional helpers: menus pick the entry up without them, only later.
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$DATA_HOME/applications" 2>/dev/null || true
    fi
    if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$ICONS/index.theme" ]; then
        gtk-update-icon-cache -q -t "$ICONS" 2>/dev/null || true
    fi
}

uninstall() {
    rm -rf "$PREFIX" "$PREFIX.new" "$PREFIX.old" "$DESKTOP" "$ICONS/scalable/apps/$NAME.svg"
    for size in $SIZES; do
        rm -f "$ICONS/${size}x${size}/apps/$NAME.png"
    done
    if [ -L "$BIN/$NAME" ]; then
        rm -f "$BIN/$NAME"
    fi
    refresh_menus
    say "Removed the AI Service Platform."
    say "Your data is kept in $DATA_HOME/$NAME; delete that folder to remove it too."
}

install_bundle() {
    bundle=$(CDPATH= cd -- "$1" 2>/dev/null && pwd) || fail "no bundle at $1: build it first with 'make package'"
    [ -x "$bundle/$NAME" ] || fail "$bundle is not a bundle (no executable $NAME in it)"
    [ "$bundle" != "$PREFIX" ] || fail "$bundle is already the installed copy"
    case $PREFIX in
        *'"'* | *'`'* | *'$'* | *'\'*) fail "cannot write a menu entry for a path with quotes, \$ or \\: $PREFIX" ;;
    esac
    icons=$bundle/_internal/resources/icons
    [ -f "$icons/$NAME.svg" ] || fail "the bundle has no icons in $icons"

    # Copy beside the old version, then swap, so a failed copy leaves the installed version working.
    mkdir -p "$(dirname -- "$PREFIX")"
    rm -rf "$PREFIX.new" "$PREFIX.old"
    cp -R -P "$bundle" "$PREFIX.new"
    if [ -e "$PREFIX" ]; then
        mv "$PREFIX" "$PREFIX.old"
    fi
    mv "$PREFIX.new" "$PREFIX"
    rm -rf "$PREFIX.old"

    mkdir -p "$BIN"
    ln -sfn "$PREFIX/$NAME" "$BIN/$NAME"

    for size in $SIZES; do
        mkdir -p "$ICONS/${size}x${size}/apps"
        cp "$icons/$NAME-$size.png" "$ICONS/${size}x${size}/apps/$NAME.png"
    done
    mkdir -p "$ICONS/scalable/apps"
    cp "$icons/$NAME.svg" "$ICONS/scalable/apps/$NAME.svg"

    # The entry names the program by its absolute path: ~/.local/bin is not on every desktop's PATH.
    mkdir -p "$DATA_HOME/applications"
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            Exec=*) printf 'Exec="%s"\n' "$PREFIX/$NAME" ;;
            TryExec=*) printf 'TryExec=%s\n' "$PREFIX/$NAME" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done <"$HERE/$NAME.desktop" >"$DESKTOP.tmp"
    chmod 644 "$DESKTOP.tmp"
    mv "$DESKTOP.tmp" "$DESKTOP"
    refresh_menus

    say "Installed the AI Service Platform in $PREFIX"
    say "  menu entry: $DESKTOP"
    say "  command:    $BIN/$NAME (serve, keys, usage; no arguments opens the window)"
    say "  your data:  $DATA_HOME/$NAME (kept across upgrades and uninstalls)"
}

case ${1:-} in
    --uninstall) uninstall ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' ;;
    -*) fail "unknown option $1 (try --help)" ;;
    *) install_bundle "${1:-$HERE/../../dist/$NAME}" ;;
esac
