"""vqcodec: a command-line video codec built on a learned spatiotemporal VQ-VAE.

Each release decodes exactly one .vqv format version: release 0.N reads and writes format N
(bitstream.RELEASES maps the formats to the releases that decode them; git tag v0.N.0)."""
__version__ = "0.17.1"
