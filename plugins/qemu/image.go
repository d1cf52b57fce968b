package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/jtarchie/pocketci/orchestra"
)

// Task images. A task with an Image runs chrooted in that image's root
// filesystem, over a per-task overlayfs layer in the guest. The driver gets
// the image from the local Docker Engine's API (inspect for the digest and
// config, then a flattened export of a created, never started container),
// an OCI layout or tarball, or a registry (go-containerregistry),
// unpacks it once into a cache directory named by the image ID, and the
// guest reads the cache through a second, read-only 9p share (tag
// "images"), so an image unpacked after the boot is visible at once.

const (
	imagesTag   = "images"
	guestImages = "/mnt/" + imagesTag
	// EnvImageCache overrides the directory of unpacked images.
	EnvImageCache = "POCKETCI_QEMU_IMAGE_CACHE"
)

// imageConfig is what a task takes from its image's config.
type imageConfig struct {
	ID         string   `json:"id"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"working_dir"`
}

// image is an unpacked image in the cache.
type image struct {
	ref    string
	key    string // directory name in the cache (the ID's hex)
	config imageConfig
}

// guestRoot is the image's root filesystem as the guest sees it.
func (im *image) guestRoot() string { return guestImages + "/" + im.key + "/rootfs" }

// env merges the image's Env with the task's (the task's wins, as on
// docker) and gives PATH from the image when the task has none.
func (im *image) env(task map[string]string) map[string]string {
	out := map[string]string{}
	for _, kv := range im.config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			out[k] = v
		}
	}
	for k, v := range task {
		out[k] = v
	}
	return out
}

// dockerEngine talks to the local Docker Engine's HTTP API over its unix
// socket (DOCKER_HOST=unix://..., else /var/run/docker.sock). Only the few
// calls the image path needs, so the qemu module needs no Docker SDK.
type dockerEngine struct {
	socket string
	http   *http.Client
}

func newDockerEngine() (*dockerEngine, error) {
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		u, err := url.Parse(h)
		if err != nil || u.Scheme != "unix" {
			return nil, fmt.Errorf("DOCKER_HOST=%q: only unix:// sockets are supported by the qemu driver", h)
		}
		sock = u.Path
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &dockerEngine{socket: sock, http: &http.Client{Transport: tr}}, nil
}

// errNotFound is a 404 from the engine.
var errNotFound = errors.New("not found")

func (e *dockerEngine) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: %w", e.socket, err)
	}
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		err := fmt.Errorf("docker engine %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(msg)))
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", errNotFound, err)
		}
		return nil, err
	}
	return resp, nil
}

// inspect returns the image's ID and config.
func (e *dockerEngine) inspect(ctx context.Context, ref string) (imageConfig, error) {
	resp, err := e.do(ctx, http.MethodGet, "/images/"+ref+"/json", nil)
	if err != nil {
		return imageConfig{}, err
	}
	defer resp.Body.Close()
	var out struct {
		ID     string `json:"Id"`
		Config struct {
			Env        []string
			WorkingDir string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return imageConfig{}, fmt.Errorf("decode image inspect: %w", err)
	}
	return imageConfig{ID: out.ID, Env: out.Config.Env, WorkingDir: out.Config.WorkingDir}, nil
}

// export streams the image's flattened root filesystem: a container is
// created (never started), exported and removed.
func (e *dockerEngine) export(ctx context.Context, ref string, unpack func(io.Reader) error) (err error) {
	body, _ := json.Marshal(map[string]any{"Image": ref, "Cmd": []string{"/pocketci-never-started"}, "Entrypoint": []string{}})
	resp, err := e.do(ctx, http.MethodPost, "/containers/create", strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("create a container to export: %w", err)
	}
	var created struct {
		ID string `json:"Id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&created)
	_ = resp.Body.Close()
	if err != nil || created.ID == "" {
		return fmt.Errorf("create a container to export: decode reply: %v", err)
	}
	defer func() {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		resp, rerr := e.do(rmCtx, http.MethodDelete, "/containers/"+created.ID+"?force=1&v=1", nil)
		if rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the export container %s: %w", created.ID, rerr))
			return
		}
		_ = resp.Body.Close()
	}()
	resp, err = e.do(ctx, http.MethodGet, "/containers/"+created.ID+"/export", nil)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer resp.Body.Close()
	return unpack(resp.Body)
}

// resolveImage returns the unpacked image ref, unpacking it into the cache
// on first use. A missing image is orchestra.ErrImageNotFound naming it.
// Sources, by the form of ref:
//   - "oci:DIR": an OCI image layout directory (its first image);
//   - "oci-archive:FILE" or "docker-archive:FILE": a tarball (docker save
//     or go-containerregistry's tarball format);
//   - anything else: the local Docker Engine, and when it does not have the
//     image (or is not there) and ref names a registry host explicitly
//     ("host:port/repo:tag", "registry.example/repo"), that registry.
func resolveImage(ctx context.Context, cache, ref string, logger *slog.Logger) (*image, error) {
	if path, ok := strings.CutPrefix(ref, "oci:"); ok {
		img, err := layoutImage(path)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w: %w", ref, orchestra.ErrImageNotFound, err)
		}
		return unpackRemote(ctx, cache, ref, img, logger)
	}
	for _, prefix := range []string{"oci-archive:", "docker-archive:"} {
		if path, ok := strings.CutPrefix(ref, prefix); ok {
			img, err := tarball.ImageFromPath(path, nil)
			if err != nil {
				return nil, fmt.Errorf("image %q: %w: %w", ref, orchestra.ErrImageNotFound, err)
			}
			return unpackRemote(ctx, cache, ref, img, logger)
		}
	}
	engine, err := newDockerEngine()
	var cfg imageConfig
	if err == nil {
		cfg, err = engine.inspect(ctx, ref)
	}
	if err == nil {
		return unpack(ctx, cache, ref, cfg, logger, func(root string) error {
			return engine.export(ctx, ref, func(r io.Reader) error { return untar(r, root) })
		})
	}
	engineErr := fmt.Errorf("local Docker Engine: %w", err)
	if !namesRegistry(ref) {
		return nil, fmt.Errorf("image %q: %w (%w)", ref, orchestra.ErrImageNotFound, engineErr)
	}
	img, rerr := registryImage(ctx, ref)
	if rerr != nil {
		return nil, fmt.Errorf("image %q: %w (%w; registry: %w)", ref, orchestra.ErrImageNotFound, engineErr, rerr)
	}
	return unpackRemote(ctx, cache, ref, img, logger)
}

// namesRegistry reports whether ref starts with a registry host (a first
// path component with a '.' or ':', or localhost), as Docker tells them.
func namesRegistry(ref string) bool {
	host, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(host, ".:") || host == "localhost")
}

// unpackRemote unpacks a go-containerregistry image (registry, layout or
// tarball): its layers flattened with whiteouts applied.
func unpackRemote(ctx context.Context, cache, ref string, img v1.Image, logger *slog.Logger) (*image, error) {
	id, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("image %q: %w: %w", ref, orchestra.ErrImageNotFound, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %q: read its config: %w", ref, err)
	}
	cfg := imageConfig{ID: id.String(), Env: cf.Config.Env, WorkingDir: cf.Config.WorkingDir}
	return unpack(ctx, cache, ref, cfg, logger, func(root string) error {
		rc := mutate.Extract(img)
		defer rc.Close()
		return untar(rc, root)
	})
}

// unpack returns the image with cfg's ID cached in the directory cache, running fill to unpack it
// into a temporary root first when the cache does not have it.
func unpack(ctx context.Context, cache, ref string, cfg imageConfig, logger *slog.Logger, fill func(root string) error) (*image, error) {
	key := strings.TrimPrefix(cfg.ID, "sha256:")
	if key == "" || strings.ContainsAny(key, "/.") {
		return nil, fmt.Errorf("image %q: unusable image ID %q", ref, cfg.ID)
	}
	im := &image{ref: ref, key: key, config: cfg}
	final := filepath.Join(cache, key)
	if _, err := os.Stat(filepath.Join(final, "rootfs")); err == nil {
		return im, nil
	}
	start := time.Now()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cache, ".unpack-")
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left when the rename below happened
	root := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	if err := fill(root); err != nil {
		return nil, fmt.Errorf("image %q: unpack: %w", ref, err)
	}
	meta, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), meta, 0o644); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(filepath.Join(final, "rootfs")); serr == nil {
			return im, nil // another process unpacked it meanwhile
		}
		return nil, fmt.Errorf("image cache: %w", err)
	}
	logger.Info("qemu: image unpacked", "image", ref, "id", cfg.ID, "dir", final, "took", time.Since(start).Round(time.Millisecond))
	return im, nil
}
