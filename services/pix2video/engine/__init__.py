"""The Pix2Video engine: depth, caption, DDIM inversion and the editor.

Model code only; nothing here imports grpc. Services wrap these stages one by
one, and the embedded CLI runs them in one process.
"""
