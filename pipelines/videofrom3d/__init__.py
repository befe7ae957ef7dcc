"""VideoFrom3D (SIGGRAPH Asia 2025): scene video from a coarse 3D scene, a camera path and a
style image (Flux ControlNet anchor views + CogVideoX inbetweening).  Home of its stages."""
