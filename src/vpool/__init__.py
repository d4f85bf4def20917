"""vpool: one virtual resource pool out of libvirt hosts."""
