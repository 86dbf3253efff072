// Package coverage connects QEMU to the coverage report code: it locates the
// project's TCG plugin (plugin/, built by `make plugin` into
// build/plugin/libmscov.so), gives the plugin arguments for a session's
// qemu.Plugin so counts land in the session's instance directory, asks the
// running plugin for an up-to-date snapshot over its control socket, and
// reads the counts back for shared/coverage to turn into reports.
package coverage
