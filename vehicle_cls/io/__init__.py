"""The input stage: what a user passes (paths, folders, globs, videos, bytes, arrays) expanded into
single images (``inputs``), read and decoded on the CPU (``images``, ``decode``) or the model's device
(``device_decode``), and annotated video written back out (``video``). Imports no model package."""
