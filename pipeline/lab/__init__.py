"""What lab sources share (pure numpy): force plates (``forceplate``), plate-to-foot assignment
(``foot_assignment``), lab marker trajectories (``markers``: gaps, vertical axis, resampling), marker
inverse kinematics onto the SMPL skeleton (``marker_ik``) and the measured ground-reaction record handed
to the build (``measured``)."""
