// Package volumetar moves a volume's files in and out as tar streams, for
// the orchestra.VolumeDataAccessor methods of drivers.
//
// A tar stream given to CopyToVolume was made by a pipeline's user, so it is
// untrusted. Drivers whose volumes are host directories (native, qemu) call
// Extract and Archive directly; drivers whose volumes live elsewhere (docker,
// k8s) pass the stream through Check before they hand it to their platform,
// so the platform never sees an entry Extract would refuse for its name or
// type.
//
// Extract refuses, with an error that names the entry and wraps
// ErrUnsafeEntry:
//   - absolute names, and names that climb out of the root with ".." once
//     cleaned ("a/../../x");
//   - an entry whose path goes through a symlink or hard link made earlier in
//     the same archive ("l" -> "/etc", then "l/passwd"), and one whose path
//     goes through a symlink already in the root that leads outside it;
//   - hard links whose target is absolute, climbs out with "..", goes through
//     such a link, or is the entry itself;
//   - device nodes, fifos, sparse files and every type other than regular
//     file, directory, symlink, hard link and PAX global header;
//   - a directory, symlink or hard link that declares data (tar readers
//     disagree on whether to skip it, which would let a platform's reader see
//     other entries than Check saw);
//   - names or link targets over MaxNameBytes, a path component over
//     MaxComponentBytes, and an entry whose headers (PAX records, GNU long
//     names and its own header block) exceed MaxHeaderBytes.
//
// A stream that ends before its end-of-archive marker (two zero blocks) is
// an error wrapping ErrTruncated, never a silent partial success.
//
// Symlinks are created with whatever target they carry, as docker cp does,
// but Extract never writes through one it created, and replaces an existing
// symlink rather than following it. Every filesystem call goes through
// os.Root, which confines paths to the root even if the tree changes while
// Extract runs; the checks above make the refusals clear and identical to
// Check's, os.Root makes them hold.
//
// Archive writes a tar of the root, or of the given paths relative to it.
// A path that does not exist is an error wrapping fs.ErrNotExist, not
// skipped, as in pocketci's native driver (commit ea678a4,
// orchestra/native/cache.go: ReadFilesFromVolume's stream fails with "failed
// to stat <path>" after the entries of the paths before it). Unlike it,
// Archive checks every path before it writes a byte, so the caller gets the
// error instead of half an archive.
package volumetar
