// Package native is an orchestra driver that runs every task as a local
// process on the host, in its own process group, with a private working
// directory. Volumes are directories linked into that working directory. The
// image of a task is ignored. See README.md for what native does with User,
// Privileged and limits.
//
// The driver is built on Linux only (it relies on waitid(2) and /proc); on
// other systems the package is empty.
package native
