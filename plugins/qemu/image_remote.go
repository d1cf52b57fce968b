package qemu

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// registryImage fetches ref's manifest and config from its registry
// (layers are fetched while unpacking), for this host's platform.
func registryImage(ctx context.Context, ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", ref, err)
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", r, err)
	}
	return img, nil
}

// layoutImage is the first image of the OCI layout in dir.
func layoutImage(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	for _, desc := range m.Manifests {
		if desc.MediaType.IsImage() {
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
			}
			return img, nil
		}
	}
	return nil, fmt.Errorf("OCI layout %s holds no image", dir)
}
